"""`tfllm train --task classify --ensemble N`: N seeds of a classifier, saved as one model that averages them.

    RUN_DIR/                     the ensemble: a finished classification run (an `EnsembleClassifier` preset)
      metrics.json               its val/test figures and size, and each member's beside them
      members/seed_1337/ ...     each member, a finished run of its own (seed, seed+1, ...)

Every member trains on the same split (`seed` picks it) with its own
`model_seed` (initialisation and shuffle), and reads the same token ids: the
first member trains the tokenizer, the others reuse it. With `--unlabeled`,
one teacher's pseudo-labels (`tfllm.training.self_training`) join the
training split of every member. An interrupted
ensemble resumes when the same command runs again: finished members are kept,
an interrupted one resumes from its backup.
"""

import dataclasses
import os

from tfllm import runs, tokenizers
from tfllm.errors import UserInputError
from tfllm.evaluation import classification_report
from tfllm.models import EncoderBackbone, EnsembleBackbone, EnsembleClassifier
from tfllm.training import classifier, common
from tfllm.training.self_training import train_self_trained, unlabeled_record

MEMBERS = "members"


def member_dirs(run_dir, seed, count):
    return [os.path.join(run_dir, MEMBERS, f"seed_{seed + k}") for k in range(count)]


def train_ensemble(config, verbose="auto", data=None, self_training=None):
    """Trains `config.ensemble` members and saves their average in `config.run_dir`; returns its metrics dict.

    `data` and `self_training` as for `tfllm.training.classifier.train_classifier`.
    """
    count = config.ensemble
    if count < 1:
        raise UserInputError(f"--ensemble must be at least 1 (1 trains one model), got {count}.")
    # Members share one preprocessor (tfllm's), so they start from scratch or from a tfllm encoder
    # preset (a pretraining or classification run), whose tokenizer every member then reads.
    backbone_cls = classifier.preset_backbone_class(config.from_preset) if config.from_preset else EncoderBackbone
    if backbone_cls is EnsembleBackbone:  # a tfllm run too: "is another model" misnamed what was refused
        folder = os.path.join(config.from_preset, MEMBERS)
        members = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        example = f" (e.g. {os.path.join(folder, members[0])})" if members else ""
        raise UserInputError(f"--from-preset {config.from_preset!r} is itself an ensemble, and each new member "
                             f"starts from one encoder: pass one of its members{example} as --from-preset, "
                             "or leave out --ensemble.")
    if backbone_cls is not EncoderBackbone:
        raise UserInputError("--ensemble trains tfllm's own encoder (from scratch, or from a tfllm classifier or "
                             f"`pretrain --objective mlm|vectors` run); --from-preset {config.from_preset!r} holds a "
                             f"{backbone_cls.__name__}: leave out --ensemble.")
    # Everything that can fail on bad input happens before the run directory is touched.
    preset = common.resumed_recipe(config, classifier.classifier_preset(config))
    if data is None:
        data = classifier.command_data(config, preset)
    if config.unlabeled and self_training is None:  # one teacher labels the texts for every member
        return train_self_trained(config, preset, data, classifier.train_classifier, verbose=verbose)
    run_dir = config.run_dir
    resume, previous = runs.prepare(run_dir, overwrite=config.overwrite, config=config)
    marker = os.path.join(run_dir, common.BACKUP, "ensemble.json")
    with common.guarded_run(run_dir, resume, previous):
        if not resume:
            runs.write_records(run_dir, config, {runs.LABELS: data.label_names, runs.RECIPE: preset,
                                                 **unlabeled_record(data.unlabeled)})
            # The resume marker (`tfllm.runs.is_unfinished`) until the ensemble is saved: the members
            # already trained are kept if a later one fails or is interrupted.
            runs.write_json(marker, {"members": count})
        else:
            print(f"Resuming the ensemble in {run_dir}")
        dirs = member_dirs(run_dir, config.seed, count)
        tokenizer = None
        for k, member_dir in enumerate(dirs):
            if not runs.is_finished(member_dir):
                print(f"Ensemble member {k + 1}/{count}: model seed {config.seed + k} -> {member_dir}")
                # A member's n-gram tables stay those of the training split unless the command sets
                # refit_on_validation: the ensemble's val figures, scored with the members as saved (and what
                # self-training compares its student with), stay out of sample.
                member = dataclasses.replace(config, run_dir=member_dir, ensemble=1, model_seed=config.seed + k,
                                             overwrite=False, unlabeled=None,
                                             overrides={"refit_on_validation": False, **config.overrides})
                try:
                    classifier.train_classifier(member, verbose=verbose, tokenizer=tokenizer, data=data)
                except UserInputError:
                    # The first member refused its input before any training (an unknown --precision or
                    # --strategy, a --set its --from-preset would ignore): nothing to resume, so the marker
                    # goes and the folder with it. Kept, every rerun "resumed" into the same refusal, and
                    # the fixed command was refused as one of "other settings".
                    if not resume and k == 0 and not runs.has_backup(os.path.join(member_dir, common.BACKUP)):
                        os.remove(marker)
                    raise
            if tokenizer is None:
                tokenizer = tokenizers.load_tokenizer(member_dir)

        members = [runs.load_task(d) for d in dirs]
        model = EnsembleClassifier.from_members(members, preprocessor=members[0].preprocessor)
        report = {split: classification_report(getattr(data, split).labels,
                                               classifier.predict_probabilities(model, getattr(data, split).texts),
                                               data.label_names)
                  for split in ("val", "test")}
        rows = []
        for k, member_dir in enumerate(dirs):
            member_metrics = runs.read_json(runs.path(member_dir, runs.METRICS))
            rows.append({"run_dir": os.path.relpath(member_dir, run_dir), "model_seed": config.seed + k,
                         "val_accuracy": member_metrics["val"]["accuracy"],
                         "test_accuracy": member_metrics["test"]["accuracy"],
                         "parameters": member_metrics["parameters"],
                         "train_seconds": member_metrics.get("train_seconds")})  # None: not measured
        seconds = [r["train_seconds"] for r in rows]
        metrics = {
            **report,
            "ensemble": count,
            "parameters": int(model.count_params()),
            **({"train_seconds": round(sum(seconds), 1)} if None not in seconds else
               {"not_measured": {"train_seconds": "a member's training seconds were not measured (see its metrics)"}}),
            "num_train_examples": len(data.train),
            "members": rows,
        }
        if self_training:
            metrics["self_training"] = self_training
        # The members' tables stay those of the training split: validation texts are held out for the average too.
        classifier.write_explanations(run_dir, model, data.label_names, data.val.texts)
        model.label_names = data.label_names  # saved in task.json: from_preset alone names the classes
        common.finish_run(run_dir, run_dir, model, preset, {}, metrics)  # also drops the resume marker
        return metrics
