"""Every bound the checkpoint readers enforce, in one place.

A checkpoint comes from anywhere, so every quantity a file *declares* (sizes, counts,
shapes, offsets) is checked against these bounds before memory is allocated or work is
done for it. A file over a bound is refused with a :class:`~sigprop.io.CheckpointError`
naming the bound. The values are chosen so that any file within them is read in well under
1 GiB of memory beyond the tensor block being scanned (see ``docs/security.md``), while
every checkpoint torch, safetensors or ``torch.export`` writes for a model of up to tens of
billions of weights stays inside them.
"""

from __future__ import annotations

#: Tensors in one checkpoint (state-dict entries, safetensors header entries, ``.pt2``
#: weights and constants together). A 10^6-tensor file is refused before it is parsed.
MAX_TENSORS = 100_000

#: Dimensions of one tensor.
MAX_NDIM = 16

#: Product of the dimensions of a tensor, each zero dimension counted as 1: bounds the
#: *declared* shape even of a tensor with no elements (``(2**62, 0)``).
MAX_DECLARED_ELEMENTS = 1 << 44

#: Elements of all tensors together (what a full scan of the file can examine).
MAX_TOTAL_ELEMENTS = 1 << 36

#: The tensors together may view each stored byte at most this many times (tied weights
#: view a storage twice); beyond, a file of small storages would make the scan examine far
#: more data than the file holds.
MAX_VIEWS_PER_BYTE = 8

#: Entries of a zip archive (torch.save / ``.pt2``).
MAX_ZIP_ENTRIES = 2 * MAX_TENSORS + 64

#: Size of the pickle (``data.pkl``, or the pickles of a legacy file) unpickled in memory.
MAX_PICKLE_BYTES = 64 << 20

#: Estimated memory of the objects a pickle may build (checked opcode by opcode before it
#: is unpickled, with per-opcode costs at or above what CPython allocates).
MAX_PICKLE_MEMORY = 256 << 20

#: A JSON document read from a file (safetensors header, ``.pt2`` model and configs).
MAX_JSON_BYTES = 64 << 20

#: Nesting depth of a JSON document.
MAX_NESTING = 64

#: Uncompressed size of one compressed (deflated) zip entry: such an entry is inflated in
#: memory to be read.
MAX_INFLATED_BYTES = 256 << 20

#: Uncompressed / compressed size of a deflated zip entry: deflate cannot do better than
#: about 1032:1, so a header claiming more is a lie about the entry.
MAX_DEFLATE_RATIO = 1032

#: A tensor that cannot be read row block by row block from the file (a non-contiguous
#: view, a compressed entry) is read whole; larger ones are refused.
MAX_WHOLE_TENSOR_BYTES = 1 << 30

#: Length of a symbolic-shape expression (``expr_str``) of a ``.pt2`` program, and the
#: number of nodes and the nesting depth of its expression tree.
MAX_EXPR_CHARS = 4096
MAX_EXPR_NODES = 256
MAX_EXPR_DEPTH = 32

#: Largest integer literal in a symbolic-shape expression (sizes are int64).
MAX_EXPR_INT = 1 << 63

#: Bytes of a file sniffed as JSON (to say "this is a JSON document, not a checkpoint").
MAX_SNIFF_JSON_BYTES = 16 << 20

#: Length of a name read from a file (state-dict key, zip entry, node name).
MAX_NAME_CHARS = 4096

__all__ = [
    "MAX_DECLARED_ELEMENTS",
    "MAX_DEFLATE_RATIO",
    "MAX_EXPR_CHARS",
    "MAX_EXPR_DEPTH",
    "MAX_EXPR_INT",
    "MAX_EXPR_NODES",
    "MAX_INFLATED_BYTES",
    "MAX_JSON_BYTES",
    "MAX_NAME_CHARS",
    "MAX_NDIM",
    "MAX_NESTING",
    "MAX_PICKLE_BYTES",
    "MAX_PICKLE_MEMORY",
    "MAX_SNIFF_JSON_BYTES",
    "MAX_TENSORS",
    "MAX_TOTAL_ELEMENTS",
    "MAX_VIEWS_PER_BYTE",
    "MAX_WHOLE_TENSOR_BYTES",
    "MAX_ZIP_ENTRIES",
]
