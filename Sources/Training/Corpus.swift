import Foundation
import Support
import TensorCore
import Tokenizer

/// A text corpus as one token stream: documents separated by lines that read `<|endoftext|>`,
/// each tokenized with the model's tokenizer and followed by the end-of-text token, as GPT-2 was
/// trained. Training cuts the stream into non-overlapping blocks of `seqLen` tokens (the tail
/// that does not fill a block is dropped) and visits them in a seeded order, epoch by epoch.
public struct TokenCorpus: Sendable {
    public let path: String
    public let tokens: [Int32]
    public let documents: Int

    /// The line that separates documents in a corpus file.
    public static let separator = "<|endoftext|>"

    public init(path: String, tokens: [Int32], documents: Int) {
        self.path = path
        self.tokens = tokens
        self.documents = documents
    }

    /// Reads and tokenizes `url`. `eot` is the end-of-text id appended after every document.
    public static func load(_ url: URL, tokenizer: GPT2Tokenizer, eot: Int) throws -> TokenCorpus {
        let data: Data
        do { data = try Files.read(url) } catch { throw TrainingError.unreadable(file: url.path, reason: error.description) }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TrainingError.badOption(option: url.path, reason: "the corpus is not UTF-8 text")
        }
        let docs = split(text)
        guard !docs.isEmpty else { throw TrainingError.corpusEmpty(file: url.path) }
        // Documents tokenize independently: in parallel, joined in order.
        var pieces = [[Int32]](repeating: [], count: docs.count)
        pieces.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress!
            parallelChunks(docs.count, minimum: 2) { lo, hi in
                for i in lo..<hi { base[i] = tokenizer.encode(docs[i]).map { Int32($0) } + [Int32(eot)] }
            }
        }
        return TokenCorpus(path: url.path, tokens: pieces.flatMap { $0 }, documents: docs.count)
    }

    /// The documents of a corpus text: the runs of lines between separator lines, each without
    /// its surrounding blank lines; empty documents dropped.
    public static func split(_ text: String) -> [String] {
        var docs: [String] = []
        var current: [Substring] = []
        func flush() {
            let doc = current.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
            if !doc.isEmpty { docs.append(doc) }
            current = []
        }
        // Lines end at any newline ("\r\n" is one Character, and a newline).
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            if line.trimmingCharacters(in: .whitespaces) == separator { flush() } else { current.append(line) }
        }
        flush()
        return docs
    }

    /// Whole blocks of `seqLen` tokens in the stream.
    public func blockCount(seqLen: Int) -> Int { tokens.count / seqLen }

    /// Block `index`'s tokens.
    public func block(_ index: Int, seqLen: Int) -> [Int] {
        tokens[index * seqLen ..< (index + 1) * seqLen].map { Int($0) }
    }
}

/// The order in which training visits a corpus's blocks: epoch e is a permutation of the blocks
/// drawn from (seed, e), so the sequence a step reads depends only on the seed and the step —
/// resuming needs no saved position.
public struct BlockOrder: Sendable {
    public let blocks: Int
    public let seed: UInt64
    private var cache: (epoch: Int, order: [Int])?

    public init(blocks: Int, seed: UInt64) {
        precondition(blocks > 0)
        self.blocks = blocks
        self.seed = seed
    }

    /// The block read `i`-th since the start of training.
    public mutating func block(at i: Int) -> Int {
        let epoch = i / blocks
        if cache?.epoch != epoch {
            var rng = SplitMix64(seed: seed, stream: 0x0B10_C000 &+ UInt64(epoch))
            cache = (epoch, rng.permutation(blocks))
        }
        return cache!.order[i % blocks]
    }
}
