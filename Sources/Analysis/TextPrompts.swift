import Foundation
import Support

/// A run of consecutive tokens of a text; every position p < tokens.count − 1 predicts
/// `tokens[p + 1]`.
public struct TextWindow: Sendable, Equatable {
    public var tokens: [Int]
    /// Index of `tokens[0]` in the whole tokenized text.
    public var firstTokenIndex: Int

    public init(tokens: [Int], firstTokenIndex: Int) {
        self.tokens = tokens
        self.firstTokenIndex = firstTokenIndex
    }

    /// Number of predicted positions: tokens.count − 1.
    public var predictedPositions: Int { tokens.count - 1 }
    /// The next-token target of each predicted position, `[predictedPositions]`.
    public var targets: ArraySlice<Int> { tokens.dropFirst() }
}

/// Plain-text mode: a UTF-8 text file cut into next-token-prediction windows.
public struct TextPrompts: Sendable {
    /// The path as given.
    public var path: String
    /// SHA-256 of the file's bytes, lowercase hex.
    public var contentHash: String
    /// Length of the whole tokenized text.
    public var totalTokens: Int
    public var windows: [TextWindow]

    /// Sum of `predictedPositions` over the windows (at most `maxTokens`).
    public var predictedPositions: Int { windows.reduce(0) { $0 + $1.predictedPositions } }

    /// Tokenizes the file and cuts it into windows of at most `context` tokens with stride
    /// `context` (no overlap, so the transition between two windows is not predicted), stopping
    /// once `maxTokens` positions are predicted (the last window is shortened to hit it
    /// exactly). A trailing one-token window predicts nothing and is dropped.
    public static func load(
        url: URL, tokenizer: some TextEncoder, context: Int = 128, maxTokens: Int? = nil
    ) throws -> TextPrompts {
        let path = url.relativePath
        guard context >= 2 else { throw AnalysisError.contextTooSmall(context: context) }
        if let maxTokens, maxTokens < 1 { throw AnalysisError.maxTokensTooSmall(maxTokens: maxTokens) }
        let data: Data
        do {
            data = try Files.read(url)
        } catch {
            throw AnalysisError.textFileUnreadable(path: path, reason: error.description)
        }
        guard let text = String(data: data, encoding: .utf8) else { throw AnalysisError.textNotUTF8(path: path) }
        let tokens = tokenizer.encode(text)
        guard tokens.count >= 2 else { throw AnalysisError.textTooShort(path: path, tokens: tokens.count) }

        var windows: [TextWindow] = []
        var budget = maxTokens ?? tokens.count  // never more than tokens.count − 1 predictions
        var start = 0
        while start < tokens.count - 1, budget > 0 {
            let length = min(context, tokens.count - start, budget + 1)
            windows.append(TextWindow(tokens: Array(tokens[start..<start + length]), firstTokenIndex: start))
            budget -= length - 1
            start += context
        }
        return TextPrompts(path: path, contentHash: SHA256.hex(data), totalTokens: tokens.count, windows: windows)
    }
}
