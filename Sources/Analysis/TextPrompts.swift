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
    /// A dataset's rows read (`--rows`; nil for a text): one window each, except the rows skipped.
    public var rows: Int?
    /// The lines of a dataset's rows shorter than the window, skipped.
    public var skippedLines: [Int] = []

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

extension TextPrompts {
    /// The paper's DLA input (its companion's `mech_interp/load_dataset.py`, `max_context=512`,
    /// `prepend_bos=False`): the first `context` tokens of each row of `dataset` (text rows
    /// tokenized whole, then cut; token rows as stored), one window per row, in file order, no
    /// BOS. A row shorter than `context` is skipped and its line recorded in `skippedLines`: the
    /// companion truncates rows and stacks them with `torch.tensor`, which fails on a shorter
    /// one (its Pile rows are all 1,024 tokens long, so it never meets one). `firstTokenIndex`
    /// is the window's index × `context`.
    public static func firstTokens(of dataset: JSONLDataset, context: Int, tokenizer: some TextEncoder,
                                   vocabSize: Int) throws -> TextPrompts {
        guard context >= 2 else { throw AnalysisError.contextTooSmall(context: context) }
        let ids = try dataset.tokenIDs(vocabSize: vocabSize) { texts in texts.map { tokenizer.encode($0) } }
        var windows: [TextWindow] = [], skipped: [Int] = []
        for (row, tokens) in zip(dataset.rows, ids) {
            guard tokens.count >= context else { skipped.append(row.line); continue }
            windows.append(TextWindow(tokens: Array(tokens[0..<context]), firstTokenIndex: windows.count * context))
        }
        guard !windows.isEmpty else {
            throw AnalysisError.rowsTooShort(path: dataset.path, rows: dataset.rows.count, context: context)
        }
        var prompts = TextPrompts(path: dataset.path, contentHash: dataset.contentHash, totalTokens: windows.count * context,
                                  windows: windows)
        (prompts.rows, prompts.skippedLines) = (dataset.rows.count, skipped)
        return prompts
    }
}
