// GPT-2's byte-level BPE tokenizer: text → ids and back, as Hugging Face GPT2TokenizerFast does.
//
// encode: split out added tokens ("<|endoftext|>"), pre-tokenize each remaining segment
// (PreTokenizer.swift), turn each piece into UTF-8 bytes, one token per byte (ByteLevel.swift),
// merge (BPE.swift). decode (Decoder.swift): concatenate the tokens' bytes, read as UTF-8.
import Foundation

/// A GPT-2 family tokenizer loaded from vocab.json + merges.txt or tokenizer.json.
public struct GPT2Tokenizer: Sendable {
    static let endOfText = "<|endoftext|>"

    /// Bytes each id stands for (nil for ids the vocabulary skips).
    let tokenBytes: [[UInt8]?]
    /// Token id for a byte sequence that is exactly one vocabulary entry.
    let idForBytes: [[UInt8]: Int]
    /// Token id of each single byte: the starting symbols of BPE.
    let byteTokenIDs: [Int32]
    let merges: BPEMerges
    /// Added tokens matched literally in the input, longest first.
    let addedTokens: [(scalars: [Unicode.Scalar], id: Int)]
    let cache = BPECache()

    /// Number of distinct token ids (50257 for GPT-2).
    public let vocabSize: Int
    /// Id of "<|endoftext|>" (50256 for GPT-2).
    public let endOfTextID: Int

    /// Loads vocab.json and merges.txt (GPT-2's original format).
    public init(vocabURL: URL, mergesURL: URL) throws {
        try self.init(files: TokenizerFiles.read(vocabURL: vocabURL, mergesURL: mergesURL))
    }

    /// Loads a Hugging Face tokenizer.json with a byte-level BPE model.
    public init(tokenizerJSONURL: URL) throws {
        try self.init(files: TokenizerFiles.read(tokenizerJSONURL: tokenizerJSONURL))
    }

    /// A tokenizer from the bytes of vocab.json and merges.txt, checked as the files are; the
    /// paths only name them in messages.
    public init(vocab: Data, merges: Data, vocabPath: String = "vocab.json", mergesPath: String = "merges.txt") throws {
        try self.init(files: TokenizerFiles.parse(vocab: vocab, vocabPath: vocabPath, merges: merges, mergesPath: mergesPath))
    }

    /// A tokenizer from the bytes of a tokenizer.json; `path` only names it in messages.
    public init(tokenizerJSON: Data, path: String = "tokenizer.json") throws {
        try self.init(files: TokenizerFiles.parse(tokenizerJSON: tokenizerJSON, path: path))
    }

    /// Loads the tokenizer of a model folder: vocab.json + merges.txt if both exist, else tokenizer.json.
    public static func load(directory: URL) throws -> GPT2Tokenizer {
        let fileManager = FileManager.default
        let vocab = directory.appendingPathComponent("vocab.json")
        let merges = directory.appendingPathComponent("merges.txt")
        let json = directory.appendingPathComponent("tokenizer.json")
        let hasVocab = fileManager.fileExists(atPath: vocab.path)
        let hasMerges = fileManager.fileExists(atPath: merges.path)
        if hasVocab && hasMerges { return try GPT2Tokenizer(vocabURL: vocab, mergesURL: merges) }
        if fileManager.fileExists(atPath: json.path) { return try GPT2Tokenizer(tokenizerJSONURL: json) }
        let found = [(hasVocab, "vocab.json"), (hasMerges, "merges.txt")].filter(\.0).map(\.1)
        throw TokenizerError.noTokenizerFiles(directory: directory.path, found: found)
    }

    init(files: TokenizerFiles) throws {
        let vocabPath = files.vocabularyPath
        var maxID = -1
        var tokenOfID: [Int: String] = [:]
        tokenOfID.reserveCapacity(files.vocabulary.count)
        var duplicated = false
        for (token, id) in files.vocabulary {
            guard id >= 0 && id < 10_000_000 else {
                throw TokenizerError.invalidVocab(path: vocabPath, reason: "token \(token.debugDescription) has id \(id)")
            }
            if tokenOfID.updateValue(token, forKey: id) != nil { duplicated = true }
            maxID = max(maxID, id)
        }
        if duplicated {
            // Name the same pair every time: the smallest shared id, its tokens in order.
            let byID = Dictionary(grouping: files.vocabulary.keys, by: { files.vocabulary[$0]! })
            let (id, tokens) = byID.filter { $0.value.count > 1 }.min { $0.key < $1.key }!
            let pair = tokens.sorted()
            throw TokenizerError.duplicateID(path: vocabPath, id: id, first: pair[0], second: pair[1])
        }
        for (content, id) in files.addedTokens {
            guard id >= 0 && id < 10_000_000 else {
                throw TokenizerError.invalidVocab(path: vocabPath, reason: "added token \(content.debugDescription) has id \(id)")
            }
            maxID = max(maxID, id)
        }

        var tokenBytes = [[UInt8]?](repeating: nil, count: maxID + 1)
        var idForBytes: [[UInt8]: Int] = [:]
        idForBytes.reserveCapacity(files.vocabulary.count)
        for (token, id) in files.vocabulary {
            if let bytes = ByteLevel.bytes(ofToken: token) {
                tokenBytes[id] = bytes
                idForBytes[bytes] = id
            } else {
                tokenBytes[id] = Array(token.utf8)  // plain-text entry, decoded as itself (as HF does)
            }
        }
        for (content, id) in files.addedTokens where tokenBytes[id] == nil {
            tokenBytes[id] = Array(content.utf8)
        }

        var byteTokenIDs: [Int32] = []
        for byte in 0..<256 {
            guard let id = exactID(of: String(ByteLevel.characterForByte[byte]), in: files.vocabulary) else {
                throw TokenizerError.missingByteToken(path: vocabPath, byte: UInt8(byte))
            }
            byteTokenIDs.append(Int32(id))
        }

        // Rank = order in the file; a pair listed twice keeps its last rank, as in HF.
        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(files.merges.count)
        for (rank, merge) in files.merges.enumerated() {
            func id(_ token: String) throws -> Int32 {
                guard let id = exactID(of: token, in: files.vocabulary) else {
                    throw TokenizerError.mergeTokenNotInVocab(path: files.mergesPath, location: merge.location, token: token)
                }
                return Int32(id)
            }
            let left = try id(merge.left), right = try id(merge.right)
            let result = try id(merge.left + merge.right)
            table[BPEMerges.pairKey(left, right)] = Merge(rank: Int32(rank), result: result)
        }

        guard let endOfTextID = files.addedTokens.first(where: { $0.content == Self.endOfText })?.id
            ?? exactID(of: Self.endOfText, in: files.vocabulary)
        else { throw TokenizerError.missingEndOfText(path: vocabPath) }
        guard !files.merges.isEmpty else { throw TokenizerError.noMerges(path: files.mergesPath) }

        self.tokenBytes = tokenBytes
        self.idForBytes = idForBytes
        self.byteTokenIDs = byteTokenIDs
        self.merges = BPEMerges(table: table)
        self.addedTokens = files.addedTokens
            .filter { !$0.content.isEmpty }
            .map { (Array($0.content.unicodeScalars), $0.id) }
            .sorted { $0.scalars.count > $1.scalars.count }
        self.vocabSize = tokenBytes.lazy.filter { $0 != nil }.count
        self.endOfTextID = endOfTextID
    }

    /// Token ids of `text`. The literal text "<|endoftext|>" (and any other added token) becomes
    /// its special id, as in GPT2TokenizerFast; no BOS/EOS is added.
    public func encode(_ text: String) -> [Int] {
        let scalars = Array(text.unicodeScalars)
        let classes = scalars.map(ScalarClass.init)
        var ids: [Int] = []
        ids.reserveCapacity(scalars.count / 3 + 1)
        var segmentStart = 0
        var i = 0
        while i < scalars.count {
            if let (id, length) = addedToken(in: scalars, at: i) {
                encodeSegment(scalars, classes, segmentStart..<i, into: &ids)
                ids.append(id)
                i += length
                segmentStart = i
            } else {
                i += 1
            }
        }
        encodeSegment(scalars, classes, segmentStart..<scalars.count, into: &ids)
        return ids
    }

    /// Longest added token starting at `i`, if any.
    private func addedToken(in scalars: [Unicode.Scalar], at i: Int) -> (id: Int, length: Int)? {
        for token in addedTokens where token.scalars[0] == scalars[i] {
            let length = token.scalars.count
            if i + length <= scalars.count && scalars[i..<(i + length)].elementsEqual(token.scalars) {
                return (token.id, length)
            }
        }
        return nil
    }

    /// Pre-tokenizes `range` as a string of its own and appends the BPE tokens of each piece.
    private func encodeSegment(
        _ scalars: [Unicode.Scalar], _ classes: [ScalarClass], _ range: Range<Int>, into ids: inout [Int]
    ) {
        guard !range.isEmpty else { return }
        var bytes: [UInt8] = []
        PreTokenizer.forEachPiece(in: scalars, classes: classes, range: range) { piece in
            bytes.removeAll(keepingCapacity: true)
            for scalar in scalars[piece] { UTF8.encode(scalar) { bytes.append($0) } }
            if bytes.count == 1 {
                ids.append(Int(byteTokenIDs[Int(bytes[0])]))
            } else if let cached = cache.value(for: bytes) {
                ids.append(contentsOf: cached)
            } else {
                let tokens = merges.apply(bytes.map { byteTokenIDs[Int($0)] }).map(Int.init)
                if bytes.count <= 256 { cache.insert(tokens, for: bytes) }  // long pieces rarely repeat
                ids.append(contentsOf: tokens)
            }
        }
    }

    /// Id of the token whose text is `token` (e.g. " the" → 262, "<|endoftext|>" → 50256), or nil
    /// if that text is not a single token. Inverse of `tokenString` for tokens that are whole UTF-8.
    public func id(of token: String) -> Int? {
        let bytes = Array(token.utf8)
        if let added = addedTokens.first(where: { $0.scalars.elementsEqual(token.unicodeScalars) }) {
            return added.id
        }
        return idForBytes[bytes]
    }
}
