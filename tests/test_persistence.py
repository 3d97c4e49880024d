"""Crash-safe persistence: writers killed mid-save, loads racing saves, hostile folders.

A helper process (``tests/crash_helper.py``) saves two versions of an index, or of a LlamaIndex
retriever, into one folder in turns; it is killed with SIGKILL at random points and the folder
must then load as exactly one of the two versions. Loads race its saves from this process.
Every hostile folder (symlinks out of it, FIFOs, devices, truncated or tampered files, absurd
manifests) must raise a ``ValueError`` naming the file, without hanging or reading junk.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exemplar_svm import ExemplarIndex
from exemplar_svm._files import MAX_JSON_DEPTH, MAX_MANIFEST_BYTES
from exemplar_svm.index import MANIFEST
from tests.crash_helper import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]
DIM = 16
KILLS = 20  # per format and kind of ids

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def index_version(ids: list[str], seed: int) -> ExemplarIndex:
    index = ExemplarIndex(unit_rows(len(ids), seed), ids)
    index.search(index.vectors[0], k=3, mode="svm")  # computes the second moment: saved too
    return index


def llama_version(ids: list[str], seed: int) -> Any:
    from llama_index.core.schema import TextNode

    from exemplar_svm.llama_index import ExemplarSVMRetriever

    vectors = unit_rows(len(ids), seed)
    nodes = [
        TextNode(id_=item, text=f"text {seed} of {item} " * 20, embedding=[float(x) for x in row])
        for item, row in zip(ids, vectors, strict=True)
    ]
    return ExemplarSVMRetriever.from_defaults(nodes=nodes, embed_model=HashEmbedder(DIM))


def fingerprint(kind: str, folder: Path) -> tuple[Any, ...]:
    """Everything a load gives that a version is made of: ids, vectors (and node texts)."""
    if kind == "index":
        index = ExemplarIndex.load(folder)
        return (tuple(index.ids), index.vectors.tobytes())
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    retriever = ExemplarSVMRetriever.from_persist_dir(folder, HashEmbedder(DIM))
    texts = tuple((node.node_id, node.get_content()) for node in retriever.nodes)
    return (tuple(retriever.index.ids), retriever.index.vectors.tobytes(), texts)


def save(kind: str, version: Any, folder: Path) -> None:
    version.save(folder) if kind == "index" else version.persist(folder)


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def unnamed(folder: Path) -> list[str]:
    """Files of a version no manifest names (written by a save killed before it published)."""
    manifest = MANIFEST if (folder / MANIFEST).exists() else "retriever.json"
    files = json.loads((folder / manifest).read_text())["files"]
    named = {entry["name"] for entry in files.values()} | {manifest}
    return sorted(path.name for path in folder.iterdir() if path.name not in named)


class Helper:
    """The helper process: it loads the two versions once and forks a writer per command."""

    def __init__(self, kind: str, first: Path, second: Path, target: Path) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.crash_helper",
                kind,
                str(first),
                str(second),
                str(target),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the helper process died (exit code {self.process.poll()})"
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def versions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """(kind, helper, target, fingerprints of A and B) for a (format, ids) parameter."""
    kind, same_ids = request.param
    if kind == "llama":
        pytest.importorskip("llama_index.core")
    first_ids = [f"doc-{number}" for number in range(30)]
    second_ids = first_ids if same_ids else [f"other-{number}" for number in range(45)]
    make = index_version if kind == "index" else llama_version
    references = []
    for name, ids, seed in (("a", first_ids, 1), ("b", second_ids, 2)):
        save(kind, make(ids, seed), tmp_path / name)
        references.append(fingerprint(kind, tmp_path / name))
    target = tmp_path / "target"
    save(kind, make(first_ids, 1), target)
    helper = Helper(kind, tmp_path / "a", tmp_path / "b", target)
    try:
        yield kind, helper, target, references
    finally:
        helper.close()


BOTH = [
    pytest.param(("index", True), id="index-equal-ids"),
    pytest.param(("index", False), id="index-different-ids"),
    pytest.param(("llama", True), id="llama-equal-ids"),
    pytest.param(("llama", False), id="llama-different-ids"),
]


@pytest.mark.parametrize("versions", BOTH, indirect=True)
def test_a_writer_killed_anywhere_leaves_the_old_or_the_new_version(versions: Any) -> None:
    kind, helper, target, references = versions
    duration = float(helper.ask("time"))
    rng = random.Random(17)
    seen = set()
    interrupted = 0  # kills that left a save's files behind: they landed inside a save
    for _ in range(KILLS):
        # Anywhere in the first four saves, whose files are written one after the other.
        assert helper.ask(f"kill {rng.uniform(0, 4 * duration):.6f}") == "killed"
        interrupted += bool(temporaries(target) or unnamed(target))
        loaded = fingerprint(kind, target)
        assert loaded in references  # exactly one version: never new vectors with old texts
        seen.add(references.index(loaded))
        assert temporaries(target) == []  # the load removed what the killed writer left
    assert seen == {0, 1}  # the kills landed in both versions' saves
    assert interrupted >= KILLS // 4, interrupted
    # The next save removes every file of an unfinished or replaced version.
    if kind == "index":
        ExemplarIndex.load(target).save(target)
    else:
        load_retriever(target).persist(target)
    manifest_name = MANIFEST if kind == "index" else "retriever.json"
    manifest = json.loads((target / manifest_name).read_text())
    named = {entry["name"] for entry in manifest["files"].values()}
    assert {path.name for path in target.iterdir()} == named | {manifest_name}


@pytest.mark.parametrize("versions", [BOTH[1], BOTH[3]], indirect=True)
def test_loads_racing_saves_in_another_process_get_a_whole_version(versions: Any) -> None:
    kind, helper, target, references = versions
    assert helper.ask("race") == "racing"
    loads, refused = 0, []
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            try:
                assert fingerprint(kind, target) in references
                loads += 1
            except ValueError as exc:  # only the documented error: the folder kept changing
                assert "was replaced" in str(exc), exc
                refused.append(exc)
    finally:
        assert helper.ask("stop") == "stopped"
    assert loads >= 20
    assert len(refused) <= loads // 10


# -- hostile folders ------------------------------------------------------------------------


def saved(folder: Path) -> Path:
    index = ExemplarIndex(unit_rows(3, 0), ["a", "b", "c"])
    index.search(index.vectors[0], k=2, mode="svm")
    index.save(folder)
    return folder


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def file_of(folder: Path, role: str) -> Path:
    return folder / manifest_of(folder)["files"][role]["name"]


def rewrite(folder: Path, role: str, payload: bytes) -> None:
    """Replace a file and its entry's size and checksum, as a careful tamperer would."""
    manifest = manifest_of(folder)
    entry = manifest["files"][role]
    (folder / entry["name"]).write_bytes(payload)
    entry |= {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        manifest = manifest_of(folder)
        change(manifest)
        (folder / MANIFEST).write_text(json.dumps(manifest))
        return MANIFEST

    return apply


def replace(role: str, make: Callable[[Path, Path], None]) -> Callable[[Path], str]:
    """Replace the file of ``role`` by what ``make(path, folder)`` puts there."""

    def apply(folder: Path) -> str:
        path = file_of(folder, role)
        path.unlink()
        make(path, folder)
        return path.name

    return apply


def symlink_outside(path: Path, folder: Path) -> None:
    outside = folder.parent / "elsewhere.npy"
    outside.write_bytes(b"not read")
    path.symlink_to(outside)


def symlink_loop(path: Path, folder: Path) -> None:
    (folder / "loop").symlink_to(path)
    path.symlink_to(folder / "loop")


def rows_changed(change: Callable[[np.ndarray], None]) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        vectors = np.load(file_of(folder, "vectors")).copy()
        change(vectors)
        rewrite(folder, "vectors", npy_bytes(vectors))
        return file_of(folder, "vectors").name

    return apply


def set_row(row: int, value: float) -> Callable[[np.ndarray], None]:
    def change(vectors: np.ndarray) -> None:
        vectors[row] = value

    return change


def ids_rewritten(ids: Any) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        rewrite(folder, "ids", json.dumps(ids).encode())
        return file_of(folder, "ids").name

    return apply


def truncated(role: str) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        path = file_of(folder, role)
        path.write_bytes(path.read_bytes()[:-5])
        return path.name

    return apply


def flipped(role: str) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        path = file_of(folder, role)
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x01
        path.write_bytes(bytes(data))
        return path.name

    return apply


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def moment_with_nan(folder: Path) -> str:
    gram = np.load(file_of(folder, "second_moment")).copy()
    gram[0, 0] = np.nan
    rewrite(folder, "second_moment", npy_bytes(gram))
    return file_of(folder, "second_moment").name


def manifest_as(make: Callable[[Path, Path], None]) -> Callable[[Path], str]:
    def apply(folder: Path) -> str:
        (folder / MANIFEST).unlink()
        make(folder / MANIFEST, folder)
        return MANIFEST

    return apply


def deep_manifest(path: Path, folder: Path) -> None:
    path.write_text('{"format": "exemplar-svm-index", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def huge_manifest(path: Path, folder: Path) -> None:
    with open(path, "wb") as file:  # sparse: no disk space is used
        file.truncate(MAX_MANIFEST_BYTES + 1)


def put(role: str, entry_change: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        manifest["files"][role] |= entry_change

    return change


HOSTILE = {
    "vectors symlinked to /dev/zero": (
        replace("vectors", lambda path, folder: path.symlink_to("/dev/zero")),
        "outside",
    ),
    "vectors are a FIFO": (replace("vectors", lambda path, folder: os.mkfifo(path)), "a FIFO"),
    "vectors symlinked out of the folder": (replace("vectors", symlink_outside), "outside"),
    "vectors deleted": (replace("vectors", lambda path, folder: None), "is missing"),
    "vectors are a directory": (
        replace("vectors", lambda path, folder: path.mkdir()),
        "a directory",
    ),
    "vectors in a symlink loop": (replace("vectors", symlink_loop), "cannot be followed"),
    "vectors truncated": (truncated("vectors"), "has 315 bytes, not the 320"),
    "vectors flipped": (flipped("vectors"), "checksum does not match"),
    "a row of NaN": (rows_changed(set_row(1, np.nan)), "row 1 contains NaN"),
    "a row of zeros": (rows_changed(set_row(2, 0.0)), "row 2 is all zeros"),
    "an unnormalised row": (rows_changed(set_row(0, 0.5)), "row 0 has length 2"),
    "ids flipped": (flipped("ids"), "checksum does not match"),
    "ids that are not strings": (ids_rewritten(["a", 2, "c"]), "ids must be non-empty strings"),
    "ids repeated": (ids_rewritten(["a", "a", "c"]), "duplicate id"),
    "ids too few": (ids_rewritten(["a", "b"]), "expected 3 ids, found 2"),
    "ids not a list": (ids_rewritten({"a": 1}), "expected 3 ids"),
    "ids nested deeply": (ids_rewritten(nested(MAX_JSON_DEPTH + 1)), "nested more than"),
    "second moment with NaN": (moment_with_nan, "second moment contains NaN"),
    "second moment truncated": (truncated("second_moment"), "not the"),
    "count changed": (
        edit_manifest(lambda manifest: manifest.update(count=4)),
        "holds float32 (3, 16), but",
    ),
    "size entry changed": (edit_manifest(put("vectors", {"bytes": 10**12})), "cannot be a float32"),
    "size entry not a number": (
        edit_manifest(put("vectors", {"bytes": True})),
        "bad 'vectors' size",
    ),
    "file name with a folder": (
        edit_manifest(put("ids", {"name": "sub/ids-0123456789abcdef.json"})),
        "bad 'ids' file name",
    ),
    "file name of another file": (
        edit_manifest(put("ids", {"name": "index.json"})),
        "bad 'ids' file name",
    ),
    "checksum not hex": (edit_manifest(put("ids", {"sha256": "x" * 64})), "bad 'ids' checksum"),
    "no files entry": (edit_manifest(lambda manifest: manifest.pop("files")), "no 'files'"),
    "bad settings": (
        edit_manifest(lambda manifest: manifest.update(settings={"C": 1e300})),
        "bad 'settings'",
    ),
    "manifest nested deeply": (manifest_as(deep_manifest), f"nested more than {MAX_JSON_DEPTH}"),
    "manifest of 64 MiB and a byte": (manifest_as(huge_manifest), "more than the"),
    "manifest symlinked to /dev/zero": (
        manifest_as(lambda path, folder: path.symlink_to("/dev/zero")),
        "outside",
    ),
    "manifest is a FIFO": (manifest_as(lambda path, folder: os.mkfifo(path)), "a FIFO"),
    "manifest is a directory": (manifest_as(lambda path, folder: path.mkdir()), "a directory"),
    "manifest is a list": (
        manifest_as(lambda path, folder: path.write_text("[]")),
        "is not an exemplar-svm index",
    ),
}


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading waits for a writer forever)."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("load hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("tamper", "message"), HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_folder_raises_value_error_naming_the_file(
    tamper: Callable[[Path], str], message: str, tmp_path: Path, alarm: None
) -> None:
    folder = saved(tmp_path / "idx")
    name = tamper(folder)
    with pytest.raises(ValueError) as raised:
        ExemplarIndex.load(folder)
    assert message in str(raised.value)
    assert name in str(raised.value)


def test_a_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    folder = saved(tmp_path / "idx")
    path = file_of(folder, "vectors")
    path.rename(folder / "real.npy")
    path.symlink_to("real.npy")
    assert ExemplarIndex.load(folder).ids == ["a", "b", "c"]


def test_a_version_1_folder_still_loads_and_is_replaced_on_save(tmp_path: Path) -> None:
    vectors = unit_rows(3, 0)
    payload = npy_bytes(vectors)
    (tmp_path / "vectors-0123456789abcdef.npy").write_bytes(payload)
    manifest = {
        "format": "exemplar-svm-index",
        "version": 1,
        "count": 3,
        "dim": DIM,
        "dtype": "float32",
        "vectors": "vectors-0123456789abcdef.npy",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "ids": ["a", "b", "c"],
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    index = ExemplarIndex.load(tmp_path)
    assert index.ids == ["a", "b", "c"]
    np.testing.assert_array_equal(index.vectors, vectors)
    # Its rows are checked like a new one's.
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"vectors": "/dev/zero"}))
    with pytest.raises(ValueError, match="bad file name '/dev/zero'"):
        ExemplarIndex.load(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    index.save(tmp_path)
    assert manifest_of(tmp_path)["version"] == 2
    assert "vectors-0123456789abcdef.npy" not in os.listdir(tmp_path)  # the old file is gone
    assert ExemplarIndex.load(tmp_path).ids == ["a", "b", "c"]


def test_leftovers_are_removed_and_other_files_kept(tmp_path: Path) -> None:
    folder = saved(tmp_path / "idx")
    vectors = file_of(folder, "vectors").name
    left = [f".{vectors}.abcd1234.tmp", f".{MANIFEST}.zz_00000.tmp"]
    for name in left:
        (folder / name).write_bytes(b"half written")
    (folder / "vectors-00000000000000ff.npy").write_bytes(b"an unfinished version")
    (folder / "notes.txt").write_text("mine")
    (folder / ".notes.txt.abcd1234.tmp").write_text("not a temporary file of ours")
    ExemplarIndex.load(folder)  # a load removes the temporary files (no writer holds the lock)
    assert not (folder / left[0]).exists() and not (folder / left[1]).exists()
    assert (folder / "vectors-00000000000000ff.npy").exists()  # files are left to a save
    ExemplarIndex.load(folder).save(folder)
    names = {path.name for path in folder.iterdir()}
    named = {entry["name"] for entry in manifest_of(folder)["files"].values()}
    assert names == named | {MANIFEST, "notes.txt", ".notes.txt.abcd1234.tmp"}


def test_a_save_never_overwrites_a_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "someone-else", "version": 1}))
    with pytest.raises(ValueError, match="is not an exemplar-svm index"):
        saved(tmp_path)
    assert os.listdir(tmp_path) == [MANIFEST]


# -- the LlamaIndex retriever's folder ------------------------------------------------------


@pytest.fixture
def persisted(tmp_path: Path) -> Path:
    pytest.importorskip("llama_index.core")
    llama_version([f"n{number}" for number in range(5)], 4).persist(tmp_path / "r")
    return tmp_path / "r"


def load_retriever(folder: Path) -> Any:
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    return ExemplarSVMRetriever.from_persist_dir(folder, HashEmbedder(DIM))


def test_a_persisted_retriever_is_one_manifest_and_the_files_it_names(persisted: Path) -> None:
    manifest = json.loads((persisted / "retriever.json").read_text())
    assert manifest["version"] == 2
    assert set(manifest["files"]) == {"vectors", "ids", "nodes"}
    named = {entry["name"] for entry in manifest["files"].values()}
    assert {path.name for path in persisted.iterdir()} == named | {"retriever.json"}


def test_hostile_retriever_folders_raise_value_error_naming_the_file(
    persisted: Path, alarm: None
) -> None:
    original = (persisted / "retriever.json").read_text()
    manifest = json.loads(original)
    nodes = persisted / manifest["files"]["nodes"]["name"]
    content = nodes.read_bytes()
    nodes.unlink()
    os.mkfifo(nodes)
    with pytest.raises(ValueError, match=f"{nodes.name} is not a regular file but a FIFO"):
        load_retriever(persisted)
    nodes.unlink()
    nodes.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=f"{nodes.name} is a symlink to /dev/zero, outside"):
        load_retriever(persisted)
    nodes.unlink()
    # Nodes whose ids are not the index's, with a size and checksum to match.
    other = json.loads(content)
    other[0]["__data__"]["id_"] = "someone-else"
    tampered = json.dumps(other).encode()
    nodes.write_bytes(tampered)
    manifest["files"]["nodes"] |= {
        "bytes": len(tampered),
        "sha256": hashlib.sha256(tampered).hexdigest(),
    }
    (persisted / "retriever.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"node ids in {nodes.name} do not match"):
        load_retriever(persisted)
    nodes.write_bytes(content)
    manifest = json.loads(original)
    manifest["similarity_top_k"] = True
    (persisted / "retriever.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"retriever\.json is corrupt: k must be a whole number"):
        load_retriever(persisted)


def test_a_version_1_retriever_folder_loads_and_is_replaced(persisted: Path) -> None:
    from llama_index.core.storage.docstore.utils import doc_to_json

    retriever = load_retriever(persisted)
    legacy = persisted.parent / "legacy"
    retriever.index.save(legacy / "index")  # the index as version 1 kept it, in its folder
    nodes = []
    for node in retriever.nodes:
        entry = doc_to_json(node)
        entry["__data__"]["embedding"] = None
        nodes.append(entry)
    state = {
        "format": "exemplar-svm-llama-index",
        "version": 1,
        "similarity_top_k": 3,
        "mode": "knn",
        "C": None,
        "negative_weight": None,
        "search_kwargs": {},
        "positives": [],
        "negatives": [],
        "filters": None,
        "nodes": nodes,
    }
    (legacy / "retriever.json").write_text(json.dumps(state))
    loaded = load_retriever(legacy)
    assert (loaded.mode, loaded.similarity_top_k) == ("knn", 3)
    assert [node.get_content() for node in loaded.nodes] == [
        node.get_content() for node in retriever.nodes
    ]
    loaded.persist(legacy)
    assert not (legacy / "index").exists()  # the old layout's folder is gone
    assert json.loads((legacy / "retriever.json").read_text())["version"] == 2
    assert load_retriever(legacy).mode == "knn"
