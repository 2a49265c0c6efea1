// Stage 3 of GPT-2 tokenization: byte-pair merges within one pre-tokenized piece.
//
// Reference: `bpe` in openai/gpt-2 `src/encoder.py` — repeatedly merge the adjacent pair with the
// lowest merge rank until no pair has a rank. Ties (the same pair occurring twice) merge leftmost
// first, which is what Hugging Face tokenizers' `Word::merge_all` and tiktoken do.
import Foundation

/// One entry of merges.txt: the pair it joins has this rank and produces token `result`.
struct Merge: Sendable {
    var rank: Int32
    var result: Int32
}

/// The merge table plus the encoder for one piece.
struct BPEMerges: Sendable {
    /// Keyed by `pairKey(left, right)` of the two token ids.
    let table: [UInt64: Merge]

    static func pairKey(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    func merge(_ left: Int32, _ right: Int32) -> Merge? {
        table[Self.pairKey(left, right)]
    }

    /// Applies all merges to a piece given as token ids of its single bytes.
    func apply(_ symbols: [Int32]) -> [Int32] {
        symbols.count <= 48 ? applyNaive(symbols) : applyWithHeap(symbols)
    }

    /// The reference algorithm: O(n²), fine for the short pieces of ordinary text.
    func applyNaive(_ symbols: [Int32]) -> [Int32] {
        var word = symbols
        while word.count >= 2 {
            var best: (rank: Int32, index: Int, result: Int32)? = nil
            for i in 0..<(word.count - 1) {
                if let m = merge(word[i], word[i + 1]), best == nil || m.rank < best!.rank {
                    best = (m.rank, i, m.result)
                }
            }
            guard let (_, i, result) = best else { break }
            word[i] = result
            word.remove(at: i + 1)
        }
        return word
    }

    /// Same result as `applyNaive` in O(n log n): symbols in a linked list, candidate pairs in a
    /// min-heap ordered by (rank, position); entries made stale by an earlier merge are skipped.
    func applyWithHeap(_ symbols: [Int32]) -> [Int32] {
        let n = symbols.count
        guard n >= 2 else { return symbols }
        var symbol = symbols
        var next = Array(1...n)  // n marks the end
        var previous = Array(-1..<(n - 1))  // -1 marks the start
        var alive = [Bool](repeating: true, count: n)
        var heap = PairHeap()
        for i in 0..<(n - 1) {
            if let m = merge(symbol[i], symbol[i + 1]) { heap.push(rank: m.rank, position: i) }
        }
        while let (rank, i) = heap.pop() {
            guard alive[i], next[i] < n else { continue }
            let j = next[i]
            guard let m = merge(symbol[i], symbol[j]), m.rank == rank else { continue }
            symbol[i] = m.result
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { previous[next[j]] = i }
            if previous[i] >= 0, let left = merge(symbol[previous[i]], symbol[i]) {
                heap.push(rank: left.rank, position: previous[i])
            }
            if next[i] < n, let right = merge(symbol[i], symbol[next[i]]) {
                heap.push(rank: right.rank, position: i)
            }
        }
        var result: [Int32] = []
        var i = 0
        while i < n {
            result.append(symbol[i])
            i = next[i]
        }
        return result
    }
}

/// Binary min-heap of (rank, position), smaller rank first, then leftmost.
struct PairHeap {
    private var items: [(rank: Int32, position: Int)] = []

    private static func less(_ a: (rank: Int32, position: Int), _ b: (rank: Int32, position: Int)) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.position < b.position
    }

    mutating func push(rank: Int32, position: Int) {
        items.append((rank, position))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.less(items[child], items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (rank: Int32, position: Int)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && Self.less(items[left], items[smallest]) { smallest = left }
                if right < items.count && Self.less(items[right], items[smallest]) { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}

/// Memo of piece bytes → token ids, shared by copies of a tokenizer and safe across threads.
/// Keyed by bytes, not `String`, because `String` equality is canonical equivalence
/// ("é" == "e\u{301}") while the two spellings tokenize differently.
final class BPECache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [[UInt8]: [Int]] = [:]
    private let capacity: Int

    init(capacity: Int = 100_000) { self.capacity = capacity }

    func value(for key: [UInt8]) -> [Int]? {
        lock.lock()
        defer { lock.unlock() }
        return entries[key]
    }

    func insert(_ value: [Int], for key: [UInt8]) {
        lock.lock()
        defer { lock.unlock() }
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }
}
