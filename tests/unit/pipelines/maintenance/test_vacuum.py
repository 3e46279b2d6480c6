"""The vacuum task's bloat estimate."""

from pipelines.maintenance.vacuum import bloat_estimate


def test_an_index_of_the_size_its_rows_need_has_no_bloat_and_a_bigger_one_has_some():
    # 100,000 uuid keys: (16 + 8) bytes a tuple, 4 a line pointer, at 90% fill: ~3.1 MB.
    tight = bloat_estimate(3_200_000, 100_000, 16, 8192)
    loose = bloat_estimate(12_800_000, 100_000, 16, 8192)
    assert tight is not None and tight < 0.05
    assert loose is not None and 0.7 < loose < 0.8


def test_no_estimate_without_statistics():
    assert bloat_estimate(8192 * 10, 0, 16, 8192) is None
    assert bloat_estimate(8192 * 10, 1000, None, 8192) is None
