"""The public surface: `jaxconv.__all__`, its docstrings and its signatures, pinned.

The lists and signatures below are written out by hand from DESIGN.md (and, for the
names PyTorch has, from `torch.nn.functional`), not read from the package, so that a
rename, a reordered parameter or a changed default fails here first.
"""

import inspect
import types

import jax.numpy as jnp
import pytest

import jaxconv

# DESIGN.md's public API, plus the sharding helpers the package exports on purpose.
DOCUMENTED = (
    "IMPLS",
    # convolutions
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    # the notes' building blocks
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    # patches
    "unfold",
    "fold",
    # shapes, cost, composition, initialisation
    "output_shape",
    "transpose_output_shape",
    "resolve_padding",
    "conv_cost",
    "ConvCost",
    "compose_kernels",
    "init_conv",
    # sharding
    "halo_exchange",
    "sharded_conv",
)

EMPTY = inspect.Parameter.empty

# torch.nn.functional's positional parameters, in order, with their defaults.
TORCH_CONV = (
    ("input", EMPTY),
    ("weight", EMPTY),
    ("bias", None),
    ("stride", 1),
    ("padding", 0),
    ("dilation", 1),
    ("groups", 1),
)
TORCH_CONV_TRANSPOSE = (
    ("input", EMPTY),
    ("weight", EMPTY),
    ("bias", None),
    ("stride", 1),
    ("padding", 0),
    ("output_padding", 0),
    ("groups", 1),
    ("dilation", 1),
)
TORCH_UNFOLD = (
    ("input", EMPTY),
    ("kernel_size", EMPTY),
    ("dilation", 1),
    ("padding", 0),
    ("stride", 1),
)
TORCH_FOLD = (
    ("input", EMPTY),
    ("output_size", EMPTY),
    ("kernel_size", EMPTY),
    ("dilation", 1),
    ("padding", 0),
    ("stride", 1),
)

# The contract's keyword-only parameters (after `*`), with their defaults.
CONV_KEYWORDS = (
    ("padding_mode", "zeros"),
    ("channels_last", False),
    ("impl", "auto"),
    ("precision", None),
)
CONV_TRANSPOSE_KEYWORDS = (
    ("channels_last", False),
    ("impl", "auto"),
    ("precision", None),
)

# name -> (positional parameters, keyword-only parameters): exactly these, nothing else.
EXACT = {
    **{name: (TORCH_CONV, CONV_KEYWORDS) for name in ("conv", "conv1d", "conv2d", "conv3d")},
    **{
        name: (TORCH_CONV_TRANSPOSE, CONV_TRANSPOSE_KEYWORDS)
        for name in ("conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    },
    "unfold": (TORCH_UNFOLD, ()),
    "fold": (TORCH_FOLD, ()),
    **{
        name: ((("X", EMPTY), ("K", EMPTY)), ())
        for name in ("corr2d", "corr2d_multi_in", "corr2d_multi_in_out", "corr2d_multi_in_out_1x1")
    },
    # Not in DESIGN.md; pinned as exported.
    "halo_exchange": (
        (("x", EMPTY), ("axis_name", EMPTY), ("halo", EMPTY), ("dim", EMPTY)),
        (("circular", False),),
    ),
}

# name -> (positional parameters, keyword-only parameters) of DESIGN.md. The positional
# ones are exact; more keyword-only ones may follow (STYLE: what PyTorch does not have
# is keyword-only), but these must be there with these defaults.
AT_LEAST = {
    "output_shape": (
        (
            ("input_shape", EMPTY),
            ("weight_shape", EMPTY),
            ("stride", 1),
            ("padding", 0),
            ("dilation", 1),
            ("groups", 1),
        ),
        (("channels_last", False),),
    ),
    "transpose_output_shape": (
        (
            ("input_shape", EMPTY),
            ("weight_shape", EMPTY),
            ("stride", 1),
            ("padding", 0),
            ("output_padding", 0),
            ("groups", 1),
            ("dilation", 1),
        ),
        (("channels_last", False),),
    ),
    "resolve_padding": (
        (
            ("padding", EMPTY),
            ("kernel_size", EMPTY),
            ("stride", 1),
            ("dilation", 1),
            ("input_size", None),
        ),
        (),
    ),
    "conv_cost": (
        (
            ("input_shape", EMPTY),
            ("weight_shape", EMPTY),
            ("stride", 1),
            ("padding", 0),
            ("dilation", 1),
            ("groups", 1),
        ),
        (("channels_last", False), ("dtype", "float32"), ("transpose", False)),
    ),
    "compose_kernels": (
        (("w1", EMPTY), ("w2", EMPTY), ("b1", None), ("b2", None)),
        (),
    ),
    "init_conv": (
        (
            ("key", EMPTY),
            ("in_channels", EMPTY),
            ("out_channels", EMPTY),
            ("kernel_size", EMPTY),
            ("groups", 1),
        ),
        (
            ("bias", True),
            ("transpose", False),
            ("channels_last", False),
            ("dtype", jnp.float32),
        ),
    ),
    # A conv over a split input: conv's positional order, then its own keywords.
    "sharded_conv": (TORCH_CONV, CONV_KEYWORDS),
}

FUNCTIONS = tuple(
    name
    for name in DOCUMENTED
    if callable(getattr(jaxconv, name)) and not inspect.isclass(getattr(jaxconv, name))
)


def parameters(name):
    """(positional parameters, keyword-only parameters) as (name, default) pairs."""
    params = inspect.signature(getattr(jaxconv, name)).parameters.values()
    kinds = {p.kind for p in params}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds, f"{name} takes *args"
    assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{name} takes **kwargs"
    assert inspect.Parameter.POSITIONAL_ONLY not in kinds, f"{name} has positional-only params"
    positional = tuple(
        (p.name, p.default) for p in params if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    keyword = tuple((p.name, p.default) for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY)
    return positional, keyword


# ----------------------------------------------------------------------------- __all__


def test_all_is_the_documented_list():
    assert len(set(jaxconv.__all__)) == len(jaxconv.__all__), "duplicates in __all__"
    assert sorted(jaxconv.__all__) == sorted(DOCUMENTED)


def test_every_name_is_importable():
    namespace = {}
    exec("from jaxconv import *", namespace)  # what `from jaxconv import *` binds
    for name in DOCUMENTED:
        assert getattr(jaxconv, name) is namespace[name], name


def test_nothing_public_outside_all():
    # Submodules (jaxconv.functional, ...) are reachable as attributes; any other public
    # name at the top level must be in __all__.
    public = {
        name
        for name, value in vars(jaxconv).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(jaxconv.__all__)


@pytest.mark.parametrize("name", [n for n in DOCUMENTED if n != "IMPLS"])
def test_defined_in_jaxconv(name):
    module = getattr(jaxconv, name).__module__
    assert module == "jaxconv" or module.startswith("jaxconv."), module


def test_impls():
    impls = jaxconv.IMPLS
    assert isinstance(impls, tuple)
    assert all(isinstance(i, str) for i in impls)
    assert len(set(impls)) == len(impls), impls
    assert {"lax", "einsum", "matmul", "fft"} <= set(impls)
    assert "auto" not in impls  # "auto" picks among them; it is not one


# ----------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize("name", FUNCTIONS)
def test_docstring_has_sections_and_a_runnable_example(name):
    doc = inspect.getdoc(getattr(jaxconv, name))
    assert doc, f"{name} has no docstring"
    for section in ("Args:", "Returns:", "Raises:", "Examples:"):
        assert f"\n{section}\n" in f"\n{doc}\n", f"{name}'s docstring has no {section} section"
    examples = doc.split("\nExamples:\n", 1)[1]
    assert ">>> " in examples, f"{name}'s Examples section has no >>> example"


def test_class_docstrings():
    doc = inspect.getdoc(jaxconv.ConvCost)
    assert doc and "Attributes:" in doc


# ----------------------------------------------------------------------------- signatures


def test_every_function_signature_is_pinned():
    assert set(FUNCTIONS) == set(EXACT) | set(AT_LEAST)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_signature_exactly(name):
    positional, keyword = EXACT[name]
    assert parameters(name) == (positional, keyword)


@pytest.mark.parametrize("name", sorted(AT_LEAST))
def test_signature_contains_the_contract(name):
    positional, keyword = AT_LEAST[name]
    got_positional, got_keyword = parameters(name)
    assert got_positional == positional
    got = dict(got_keyword)
    for arg, default in keyword:
        assert arg in got, f"{name} lacks keyword-only `{arg}`"
        assert got[arg] == default, (name, arg, got[arg], default)
    # The contract's keyword-only parameters keep their relative order.
    order = [arg for arg, _ in got_keyword if arg in dict(keyword)]
    assert order == [arg for arg, _ in keyword]
