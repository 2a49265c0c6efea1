/// Indices as the fewest closed ranges of consecutive values, in ascending order: `[0, 1, 2, 5, 9, 10]`
/// → `[0...2, 5...5, 9...10]`. Duplicates count once. Progress markers of the results store are
/// written this way, so that a marker covers exactly the prompts it names (a shard's prompts are not
/// consecutive).
public func contiguousRanges(_ indices: some Sequence<Int>) -> [ClosedRange<Int>] {
    var out: [ClosedRange<Int>] = []
    for i in Set(indices).sorted() {
        if let last = out.last, last.upperBound + 1 == i {
            out[out.count - 1] = last.lowerBound...i
        } else {
            out.append(i...i)
        }
    }
    return out
}
