import pytest
import torch

from symcoherence.groups import FieldType


def test_channel_count_and_repeat():
    assert FieldType(["vector"]).num_channels == 2
    assert FieldType(["pseudoscalar"]).repeat(4).num_channels == 4
    assert FieldType(["vector", "scalar"]).repeat(2).kinds == ("vector", "scalar") * 2
    assert FieldType(["scalar"]) + FieldType(["vector"]) == FieldType(["scalar", "vector"])


def test_equality_hash_and_repr():
    assert FieldType(["vector"]) == FieldType(("vector",))
    assert FieldType(["vector"]) != FieldType(["scalar", "scalar"])
    assert len({FieldType(["vector"]), FieldType(["vector"])}) == 1
    assert repr(FieldType(["vector", "pseudoscalar"])) == "FieldType(['vector', 'pseudoscalar'])"


def test_channel_action_of_quarter_turn():
    # r maps (u_x, u_y) -> (-u_y, u_x); a pseudoscalar keeps its sign (det = +1).
    source, sign = FieldType(["vector", "pseudoscalar"]).channel_action(((0, -1), (1, 0)))
    assert source == [1, 0, 2]
    assert sign == [-1.0, 1.0, 1.0]
    # the mirror x -> -x flips u_x and the pseudoscalar, not u_y
    source, sign = FieldType(["vector", "pseudoscalar"]).channel_action(((-1, 0), (0, 1)))
    assert source == [0, 1, 2]
    assert sign == [-1.0, 1.0, -1.0]


@pytest.mark.parametrize(
    "kinds, error, match",
    [
        ("vector", TypeError, r"write FieldType\(\['vector'\]\)"),
        ([], ValueError, "at least one kind"),
        (["velocity"], ValueError, r"unknown field kind.*'velocity'.*valid kinds"),
    ],
)
def test_bad_kinds(kinds, error, match):
    with pytest.raises(error, match=match):
        FieldType(kinds)


def test_channel_mismatch_message_suggests_repeat():
    with pytest.raises(ValueError, match=r"has 2 channels but field has 4 .*repeat\(2\)"):
        FieldType(["vector"]).check(torch.zeros(8, 4, 16, 16))
    with pytest.raises(ValueError, match=r"layout \(\.\.\., C, H, W\)"):
        FieldType(["scalar"]).check(torch.zeros(16, 16))


def test_repeat_rejects_nonpositive():
    with pytest.raises(ValueError, match="positive integer"):
        FieldType(["scalar"]).repeat(0)
