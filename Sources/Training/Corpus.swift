import Foundation
import Support
import TensorCore
import Tokenizer

/// The tokens a training or an evaluation reads, cut into non-overlapping blocks of `seqLen`.
/// Three sources (`CorpusSource`):
/// - a text corpus: documents separated by lines that read `<|endoftext|>`, each tokenized with
///   the model's tokenizer and followed by the end-of-text token, as GPT-2 was trained; one
///   stream, so blocks run across documents, and the tail that does not fill a block is dropped;
/// - a token file (nanoGPT's `.bin`, an `.npy`): the same kind of stream, already tokenized,
///   read from the mapped file as blocks are visited;
/// - a JSON Lines dataset: each document (a row) followed by the end-of-text token and cut into
///   windows of `windowLength` from its first token, so that no window crosses two documents
///   (`DocumentCut`); the corpus holds those windows end to end.
/// Training visits the blocks in a seeded order, epoch by epoch (`BlockOrder`).
public struct TokenCorpus: Sendable {
    /// The path as given.
    public let path: String
    public let documents: Int
    /// Identity of the tokens (hex), recorded with a run and checked on resume.
    public let hash: String
    /// The window length a dataset was cut for (its blocks are its windows; no other length may
    /// cut it); nil for a stream, which any length cuts.
    public let windowLength: Int?
    /// How a dataset's documents were cut into windows (nil for a stream).
    public let cut: DocumentCut?
    private let storage: Storage

    enum Storage: Sendable {
        case memory([Int32])
        case file(TokenFile)
    }

    /// The line that separates documents in a corpus file.
    public static let separator = "<|endoftext|>"

    /// A stream of `tokens` in memory; its hash is XXH64 of the tokens.
    public init(path: String, tokens: [Int32], documents: Int) {
        self.init(path: path, storage: .memory(tokens), documents: documents, hash: Self.hash(tokens), windowLength: nil, cut: nil)
    }

    init(path: String, storage: Storage, documents: Int, hash: String, windowLength: Int?, cut: DocumentCut?) {
        (self.path, self.storage, self.documents, self.hash) = (path, storage, documents, hash)
        (self.windowLength, self.cut) = (windowLength, cut)
    }

    /// A token file as a stream: every id checked against `vocabSize`; its documents are the
    /// `eot`s it holds.
    public static func load(tokens file: TokenFile, vocabSize: Int, eot: Int) throws -> TokenCorpus {
        let documents = try file.validate(vocabSize: vocabSize, eot: eot)
        return TokenCorpus(path: file.path, storage: .file(file), documents: documents, hash: file.hash, windowLength: nil, cut: nil)
    }

    /// Reads and tokenizes the text corpus `url`. `eot` is the end-of-text id appended after every document.
    public static func load(_ url: URL, tokenizer: GPT2Tokenizer, eot: Int) throws -> TokenCorpus {
        let data: Data
        do { data = try Files.read(url) } catch { throw TrainingError.unreadable(file: url.path, reason: error.description) }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TrainingError.badOption(option: url.path, reason: "the corpus is not UTF-8 text")
        }
        let docs = split(text)
        guard !docs.isEmpty else { throw TrainingError.corpusEmpty(file: url.path) }
        let pieces = tokenize(docs, tokenizer: tokenizer)
        return TokenCorpus(path: url.path, tokens: pieces.flatMap { $0.map(Int32.init) + [Int32(eot)] }, documents: docs.count)
    }

    /// A JSON Lines dataset cut into windows of `window` tokens that never cross documents
    /// (`DocumentCut.cut`): text rows tokenized, token rows checked against `vocabSize`.
    public static func load(dataset: JSONLDataset, tokenizer: GPT2Tokenizer, eot: Int, vocabSize: Int,
                            window: Int) throws -> TokenCorpus {
        let docs = try dataset.tokenIDs(vocabSize: vocabSize) { tokenize($0, tokenizer: tokenizer) }
        let (tokens, cut) = DocumentCut.cut(docs.map { $0.map(Int32.init) }, window: window, eot: Int32(eot))
        guard cut.windows > 0 else { throw TrainingError.noWindows(file: dataset.path, cut: cut) }
        return TokenCorpus(path: dataset.path, storage: .memory(tokens), documents: docs.count,
                           hash: "w\(window):" + hash(tokens), windowLength: window, cut: cut)
    }

    /// Each text tokenized, in parallel, in order.
    static func tokenize(_ texts: [String], tokenizer: GPT2Tokenizer) -> [[Int]] {
        var pieces = [[Int]](repeating: [], count: texts.count)
        pieces.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress!
            parallelChunks(texts.count, minimum: 2) { lo, hi in
                for i in lo..<hi { base[i] = tokenizer.encode(texts[i]) }
            }
        }
        return pieces
    }

    static func hash(_ tokens: [Int32]) -> String { tokens.withUnsafeBytes { XXH64.hex(XXH64.hash($0, seed: 0)) } }

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

    /// Tokens in the corpus (a dataset: in its windows).
    public var tokenCount: Int {
        switch storage {
        case .memory(let t): t.count
        case .file(let f): f.count
        }
    }

    /// Whole blocks of `seqLen` tokens (a dataset: its windows; `seqLen` must be its `windowLength`).
    public func blockCount(seqLen: Int) -> Int {
        precondition(windowLength == nil || windowLength == seqLen, "a dataset cut for \(windowLength!) read in blocks of \(seqLen)")
        return tokenCount / seqLen
    }

    /// Block `index`'s tokens.
    public func block(_ index: Int, seqLen: Int) -> [Int] {
        precondition(windowLength == nil || windowLength == seqLen, "a dataset cut for \(windowLength!) read in blocks of \(seqLen)")
        return tokens(index * seqLen ..< (index + 1) * seqLen)
    }

    /// The tokens in `range` (of 0..<tokenCount).
    public func tokens(_ range: Range<Int>) -> [Int] {
        switch storage {
        case .memory(let t): t[range].map { Int($0) }
        case .file(let f): f.ids(range).map { Int($0) }
        }
    }

    /// Throws unless blocks of `seqLen` may cut the corpus (`option` names the length's option).
    public func checkWindow(_ seqLen: Int, option: String) throws {
        if let windowLength, windowLength != seqLen {
            throw TrainingError.badOption(option: option, reason: "\(seqLen) differs from the \(windowLength) the dataset \(path) was cut for")
        }
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
