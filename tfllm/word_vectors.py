"""Count-based word vectors: windowed co-occurrence counts -> positive PMI -> truncated SVD.

The classic way to put word meaning into an embedding from little unlabeled
text (Levy, Goldberg & Dagan 2015, "Improving distributional similarity with
lessons learned from word embeddings"; the SVD of the shifted PMI matrix is
what skip-gram factorises implicitly). On `rotten_tomatoes`' 11k training texts
(430k word pieces) a masked-LM Transformer learned almost nothing in 13 minutes,
while these vectors take seconds, and the `default` recipe fine-tuned from them
scores 0.688 test accuracy on 1,000 labels against 0.666 from scratch
(docs/benchmarks.md, "Few labels"). `tfllm pretrain --objective vectors` writes
them into an encoder's token embedding, and the `default` classifier recipe
computes them from its own training (and `--unlabeled`) texts before it fits.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from tfllm.errors import UserInputError


# Up to this many vocabulary x vocabulary cells (a 2,048-token vocabulary: 32 MB of float64) the counts are a
# dense array, filled by np.bincount; past it (the default recipe's 8,000 tokens: 512 MB) a sparse matrix.
DENSE_COUNTS = 2**22
# Token positions counted at a time: what bounds the temporary arrays (a few to tens of MB), whatever the corpus.
CHUNK_TOKENS = 2**17


def cooccurrence(ids, row_splits, vocabulary_size, window, ignore=()):
    """Symmetric `[vocabulary, vocabulary]` counts of tokens at most `window` apart in one document,
    each pair weighted 1/distance (word2vec's and GloVe's weighting). The documents are ragged, as a
    `tf.RaggedTensor` holds them: flat token `ids` and `row_splits` (document d is
    `ids[row_splits[d]:row_splits[d + 1]]`). Ids in `ignore` (padding, unknown, ...) count as
    tokens but pair with nothing."""
    # Counted a chunk of token positions and one distance at a time: the pairs of every token and distance at
    # once (int64 rows and cols, float64 weights, a document id per token, then all copied into a sparse
    # matrix) took 10 GB on a 200,000-row file to fill a 50 x 50 table. The counts equal those sums of
    # 1/distance up to float rounding (a chunk's count / distance is rounded once, not at each addition).
    ids, row_splits = np.asarray(ids), np.asarray(row_splits, "int64")
    size, shape, ignore = vocabulary_size, (vocabulary_size, vocabulary_size), np.asarray(list(ignore), "int64")
    dense = size * size <= DENSE_COUNTS
    counts = np.zeros(size * size) if dense else scipy.sparse.csr_matrix(shape)
    for start in range(0, len(ids), CHUNK_TOKENS):
        stop = min(start + CHUNK_TOKENS, len(ids))
        position = np.arange(start, stop)
        end = row_splits[np.searchsorted(row_splits, position, side="right")]  # where each one's document ends
        chunk = ids[start:stop + window].astype("int64")  # the chunk's tokens and the window after them
        real = ~np.isin(chunk, ignore)
        keys, weights = [], []  # each pair as one key, row * size + col
        for distance in range(1, window + 1):
            pairs = min(stop - start, len(chunk) - distance)  # tokens with one `distance` after them
            if pairs <= 0:
                break
            same = (position[:pairs] + distance < end[:pairs]) & real[:pairs] & real[distance:distance + pairs]
            key = chunk[:pairs][same] * size + chunk[distance:distance + pairs][same]
            if dense:
                counts += np.bincount(key, minlength=size * size) / distance
            else:
                keys.append(key)
                weights.append(np.full(len(key), 1.0 / distance))
        if keys:  # sparse: as many entries as the chunk's distinct pairs, never size x size
            keys = np.concatenate(keys)
            counts = counts + scipy.sparse.coo_matrix((np.concatenate(weights), (keys // size, keys % size)),
                                                      shape=shape).tocsr()
    if dense:
        counts = scipy.sparse.csr_matrix(counts.reshape(shape))
    return counts + counts.T


def positive_pmi(counts, context_power=0.75):
    """max(0, PMI) of a co-occurrence matrix, with the context distribution raised to `context_power`
    (0.75, as word2vec's negative sampling does), which keeps rare contexts from dominating."""
    counts = counts.tocoo()
    total = counts.sum()
    if total == 0:
        raise UserInputError("no document has two tokens; word vectors need running text (documents of "
                             "several words, one per line).")
    word = np.asarray(counts.sum(axis=1)).ravel() / total
    context = np.asarray(counts.sum(axis=0)).ravel() ** context_power
    context /= context.sum()
    pmi = np.log(counts.data / total) - np.log(word[counts.row]) - np.log(context[counts.col])
    keep = pmi > 0
    return scipy.sparse.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def word_vectors(ids, row_splits, vocabulary_size, dim, window=10, context_power=0.75, ignore=(), seed=0):
    """`([vocabulary, dim] float32 unit vectors, [vocabulary] bool: which ids got one)` of ragged
    documents (`ids`, `row_splits`, as for `cooccurrence`).

    The vectors are `U sqrt(S)` of the PPMI matrix's rank-`dim` SVD, scaled to unit
    length; an id that never co-occurs with another (special tokens, unused
    pieces) gets no vector, and the caller keeps its initial embedding.
    """
    # The long step: on a file of hundreds of MB, tens of seconds of counting and SVD that printed nothing
    # (a classifier's training says what the vectors found only once they are done).
    print(f"Word vectors: counting the co-occurrences of {len(ids):,} tokens in {len(row_splits) - 1:,} documents "
          f"(window {window}), then a rank-{dim} SVD", flush=True)
    matrix = positive_pmi(cooccurrence(ids, row_splits, vocabulary_size, window, ignore), context_power)
    rank = min(dim, min(matrix.shape) - 1)
    if rank < 1 or matrix.nnz == 0:
        raise UserInputError("no pair of tokens co-occurs more often than chance: too little text for word "
                             "vectors; pretrain on more text.")
    rng = np.random.default_rng(seed)
    u, s, _ = scipy.sparse.linalg.svds(matrix, k=rank, v0=rng.standard_normal(min(matrix.shape)))
    vectors = np.zeros((vocabulary_size, dim), "float32")
    vectors[:, :rank] = u[:, ::-1] * np.sqrt(s[::-1])  # svds returns ascending singular values
    # Only ids with a PPMI entry have a vector (an empty row's U row is rounding noise, not zero).
    found = np.diff(matrix.indptr) > 0
    vectors[~found] = 0.0
    vectors[found] /= np.maximum(np.linalg.norm(vectors[found], axis=1, keepdims=True), 1e-12)
    return vectors, found


def nearest(vectors, token_id, count=5):
    """The `count` ids whose vectors are closest (cosine) to `token_id`'s, itself excluded."""
    scores = vectors @ vectors[token_id]
    scores[token_id] = -np.inf
    return [int(i) for i in np.argsort(-scores)[:count]]
