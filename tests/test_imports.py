"""tfllm's imports run one way, without loops (issue 17, item 2).

The graph is read statically (`ast` over tfllm/**/*.py, nothing is imported), so
this runs in well under a second. Layers, each importing only itself and the
layers below it (docs/architecture.md draws them):

    cli -> task modules -> export / serving -> models / tokenizers / data -> datasets / config / errors

Cycles are checked on module-level imports (the ones Python runs at import time);
the layer rules on every import, including those inside functions, because an
import hidden in a function body is still a dependency. The last test imports the
tfllm modules the benchmark scripts name, to check the names still exist.
"""

import ast
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Index = layer, lower imports higher, never the reverse. Keys are the part after
# `tfllm.` (a package covers its submodules). A new top-level module must be
# placed here; the test says so.
LAYERS = [
    {"__main__"},  # `python -m tfllm`: runs the CLI
    {"cli"},
    {"training", "prediction", "scoring", "fast_generation", "fast_classification", "explanations", "translation",
     "tuning"},  # task modules
    {"export", "serving"},
    # `generation` is the decoding library of a causal LM (samplers, KerasHub's cached loop, a loaded
    # run's Generator): exports compile it into their graphs, so it sits with the models.
    {"models", "generation", "ngram", "memory", "input_method", "word_vectors", "tokenizers", "data", "runs", "evaluation"},
    {"datasets", "config", "presets", "errors", "_env"},
]

# Known violations, each (importer, imported), so that no new one can creep in; each entry
# goes when its import does (the last test below fails on an entry whose import is gone,
# so the list only shrinks). Empty since the TFLite modules were split and `generation`
# was placed with the models.
KNOWN_VIOLATIONS = {}


def module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(node, module, is_package, modules):
    """The tfllm modules an Import/ImportFrom node names (`from pkg import sub` -> pkg.sub)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
    targets = []
    for name in names:
        if name != "tfllm" and not name.startswith("tfllm."):
            continue
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        targets.append(name)
    return targets


def import_edges(root):
    """{(importer, imported): [(line, module_level), ...]} over root/tfllm/**/*.py."""
    files = {module_name(path, root): path for path in (root / "tfllm").rglob("*.py")}
    edges = defaultdict(list)

    def visit(node, module, is_package, module_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in imported_modules(child, module, is_package, files):
                    if target != module:
                        edges[module, target].append((child.lineno, module_level))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            visit(child, module, is_package, module_level and not nested)

    for module, path in files.items():
        visit(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py", True)
    return dict(edges)


def find_cycle(edges):
    """One import cycle as [a, b, ..., a], or None."""
    graph = defaultdict(set)
    for importer, imported in edges:
        graph[importer].add(imported)
    state = {}

    def dfs(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node, [node])
            if found:
                return found
    return None


def layer_of(module):
    top = module.split(".")[1] if "." in module else None
    if top is None:
        return None  # tfllm/__init__.py re-exports lazily by name; not an import here
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    pytest.fail(f"{module} is in no layer: add {top!r} to LAYERS in {__file__} (and to docs/architecture.md)")


def describe(edges, pair):
    lines = ", ".join(f"line {line}{'' if top else ' (in a function)'}" for line, top in edges[pair])
    return f"{pair[0]} imports {pair[1]} ({lines})"


def module_level(edges):
    """The edges Python follows at import time (not those inside functions)."""
    return {pair for pair, sites in edges.items() if any(top for _, top in sites)}


EDGES = import_edges(ROOT)


def new_violations(pairs):
    return [describe(EDGES, pair) for pair in sorted(pairs) if pair not in KNOWN_VIOLATIONS]


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(module_level(EDGES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + " (move the shared piece into a lower module)"


def test_nothing_imports_the_cli():
    bad = new_violations(pair for pair in EDGES if pair[1] == "tfllm.cli" and pair[0] != "tfllm.__main__")
    assert not bad, "the CLI only parses and calls the library; nothing may import it: " + "; ".join(bad)


def test_export_never_imports_training():
    bad = new_violations(pair for pair in EDGES if pair[0].startswith("tfllm.export") and
                         pair[1].startswith("tfllm.training"))
    assert not bad, "export reads a finished run, it does not train: " + "; ".join(bad)


def test_the_per_model_tflite_modules_do_not_import_each_other():
    """Classifier, generator and translator TFLite exports share `tflite_runtime`; they import
    neither each other nor the front door `tfllm.export.tflite` (which imports them: one way)."""
    per_model = {"tfllm.export.tflite_classifier", "tfllm.export.tflite_causal_lm", "tfllm.export.tflite_seq2seq"}
    assert per_model <= {module for pair in EDGES for module in pair}  # the check does look at them
    bad = new_violations(p for p in EDGES if set(p) <= per_model | {"tfllm.export.tflite"}
                         and p[1] != "tfllm.export.tflite_runtime" and p[0] != "tfllm.export.tflite")
    assert not bad, "; ".join(bad)


def test_imports_point_down_the_layers():
    bad = new_violations(pair for pair in EDGES if None not in (layer_of(pair[0]), layer_of(pair[1]))
                         and layer_of(pair[1]) < layer_of(pair[0]))
    assert not bad, "an import points up the layers (see this file's docstring): " + "; ".join(bad)


def test_known_violations_are_still_there():
    fixed = [f"{a} -> {b}" for a, b in KNOWN_VIOLATIONS if (a, b) not in EDGES]
    assert not fixed, f"fixed, so delete from KNOWN_VIOLATIONS in {__file__}: " + "; ".join(fixed)


def test_the_checks_see_imports_cycles_and_function_bodies(tmp_path):
    """The reader on a made-up package: relative imports, `from pkg import sub`, nesting, a loop."""
    package = tmp_path / "tfllm"
    (package / "export").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("import tfllm.export.a\n")
    (package / "export" / "__init__.py").write_text("")
    (package / "export" / "a.py").write_text("from . import b\nimport os\n")
    (package / "export" / "b.py").write_text("from tfllm.export.a import thing\n"
                                             "def f():\n    from tfllm import cli\n")
    edges = import_edges(tmp_path)
    assert edges == {
        ("tfllm.cli", "tfllm.export.a"): [(1, True)],
        ("tfllm.export.a", "tfllm.export.b"): [(1, True)],
        ("tfllm.export.b", "tfllm.export.a"): [(1, True)],
        ("tfllm.export.b", "tfllm.cli"): [(3, False)],
    }
    assert find_cycle(module_level(edges)) in (["tfllm.export.a", "tfllm.export.b", "tfllm.export.a"],
                                 ["tfllm.export.b", "tfllm.export.a", "tfllm.export.b"])
    assert find_cycle({("tfllm.cli", "tfllm.export.a"), ("tfllm.export.a", "tfllm.export.b")}) is None


def test_the_benchmarks_import_only_names_tfllm_has():
    """Every `from tfllm... import NAME` in benchmarks/*.py, function bodies included, names something that exists.

    The benchmarks are not run by the tests (torch, long runs), so a renamed function would
    otherwise break one silently (bench_precision.py imported a `build_classifier` long gone).
    """
    import importlib.util

    missing = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tfllm":
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                            and not (hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert not missing, missing


def test_the_benchmarks_record_their_command_line(tmp_path, monkeypatch):
    """Eleven scripts' JSON did not say which command made it, so a figure in docs/benchmarks.md could not be
    traced to a run: every script now writes its JSON through bench_vs_torch.save_results, which adds the
    command line that ran it."""
    writers = [f"{path.name}:{node.lineno}" for path in sorted((ROOT / "benchmarks").glob("*.py"))
               if path.name != "bench_vs_torch.py"
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Attribute) and node.attr == "dump"]
    assert not writers, f"JSON written without save_results (and its command): {writers}"
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_vs_torch import save_results

    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "bench_x.py"), "--rounds", "2"])
    save_results(str(tmp_path / "x.json"), {"ms": 1.0}, shown="")
    assert json.loads((tmp_path / "x.json").read_text()) == {"command": "python benchmarks/bench_x.py --rounds 2",
                                                             "ms": 1.0}


def test_the_readmes_python_spellings_work_after_import_tfllm():
    """`import tfllm` then `tfllm.generation.generate(...)` / `tfllm.translation.translate(...)`, as the README
    writes them, and `from tfllm import generate, translate` (both raised before)."""
    import tfllm
    from tfllm import generate, translate

    assert tfllm.generation.generate is generate and tfllm.translation.translate is translate
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        tfllm.nothing_here


def test_pretrain_is_in_the_python_api():
    """`tfllm.pretrain` (as `tfllm.train_classifier`): a notebook had to find tfllm.training.pretraining.pretrain."""
    import tfllm
    from tfllm import pretrain
    from tfllm.training import pretraining

    assert tfllm.pretrain is pretrain is pretraining.pretrain and "pretrain" in tfllm.__all__ and "pretrain" in dir(tfllm)


def test_train_classifier_refuses_another_tasks_config():
    from tfllm import TrainConfig, UserInputError, train_classifier

    with pytest.raises(UserInputError, match="tfllm.train_classifier trains task 'classify', but the config's task is "
                       "'translate': pass TrainConfig\\(task='classify', ...\\), or train it with "
                       "tfllm.training.seq2seq.train_seq2seq."):
        train_classifier(TrainConfig(task="translate", data="cedict"))
    with pytest.raises(UserInputError, match="takes a TrainConfig, got dict"):
        train_classifier({"data": "rotten_tomatoes"})


@pytest.mark.parametrize("module, function, task", [
    ("tfllm.training.causal_lm", "train_causal_lm", "generate"),
    ("tfllm.training.seq2seq", "train_seq2seq", "translate"),
    ("tfllm.training.pretraining", "pretrain", "pretrain"),
])
def test_each_trainer_refuses_a_config_of_another_task(module, function, task, tmp_path):
    """TrainConfig's task defaults to "classify": train_causal_lm and train_seq2seq trained a whole model
    on it and recorded it as a classifier, which nothing of tfllm's could then use."""
    import importlib

    from tfllm import TrainConfig, UserInputError

    trainer = getattr(importlib.import_module(module), function)
    with pytest.raises(UserInputError, match=f"trains task {task!r}, but the config's task is 'classify': pass "
                       f"TrainConfig\\(task={task!r}, ...\\), or train it with tfllm.train_classifier."):
        trainer(TrainConfig(data="shakespeare", run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module, function, fields, said", [
    ("tfllm.training.classifier", "train_classifier", {"objective": "mlm"},
     "objective is for task='pretrain', not classify; leave it out, or pretrain with "
     "tfllm.pretrain(TrainConfig(task='pretrain', ...))."),
    ("tfllm.training.causal_lm", "train_causal_lm", {"task": "generate", "objective": "causal"},
     "objective is for task='pretrain', not generate"),
    ("tfllm.training.causal_lm", "train_causal_lm", {"task": "generate", "ensemble": 3},
     "ensemble is for task='classify', not generate; leave it out."),
    ("tfllm.training.seq2seq", "train_seq2seq", {"task": "translate", "unlabeled": "texts.txt"},
     "unlabeled is for task='classify', not translate; leave it out."),
    ("tfllm.training.pretraining", "pretrain", {"task": "pretrain", "model_seed": 3},
     "model_seed is for task='classify', not pretrain; leave it out."),
    ("tfllm.training.pretraining", "pretrain", {"task": "pretrain", "label_column": "y"},
     "label_column is not for task='pretrain', which reads running text (a CSV/JSONL's text_column)"),
    ("tfllm.training.pretraining", "pretrain", {"task": "pretrain", "objective": "causal", "labels": ["a", "b"]},
     "labels is not for task='pretrain'"),
])
def test_each_trainer_refuses_a_field_its_task_does_not_read(module, function, fields, said, tmp_path):
    """`train_classifier(TrainConfig(objective="mlm"))` trained a classifier without a word (a user who thought
    they were pretraining got one), where `source_column=` was refused: every trainer refuses the fields its
    task does not read, before any data is read."""
    import importlib

    from tfllm import TrainConfig, UserInputError

    trainer = getattr(importlib.import_module(module), function)
    with pytest.raises(UserInputError, match=re.escape(said)):
        trainer(TrainConfig(data="shakespeare", run_dir=str(tmp_path / "run"), **fields))
    assert not (tmp_path / "run").exists()


def test_python_dash_m_tfllm_is_the_tfllm_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tfllm", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("tfllm "), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("code", [
    "import tfllm, keras",
    "import tfllm; import keras_hub, keras",
    "import tfllm.tokenizers, keras",  # a tfllm module imports Keras: registering waited for it, then never ran
])
def test_tfllm_s_keras_classes_are_registered_whatever_the_import_order(code):
    import subprocess
    import sys

    check = f"{code}; import keras; assert keras.saving.get_registered_object('tfllm>Transformer'); print('ok')"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.slow
def test_a_broken_keras_hub_does_not_break_import_keras(tmp_path):
    """Registering runs inside the user's `import keras`: its failure is a warning, not that import's."""
    import subprocess
    import sys

    (tmp_path / "keras_hub").mkdir()
    (tmp_path / "keras_hub" / "__init__.py").write_text("raise ImportError('a broken keras_hub')\n")
    code = "import warnings; warnings.simplefilter('always'); import tfllm, keras; print(keras.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "keras", out.stderr[-2000:]
    assert "tfllm could not register its Keras classes (ImportError: a broken keras_hub)" in out.stderr
