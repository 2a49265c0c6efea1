import Foundation

/// How the documents of a JSON Lines dataset become windows: each document's tokens are followed
/// by the end-of-text token (as GPT-2's training data and nanoGPT's `prepare.py` separate
/// documents) and cut into windows of `window` tokens from the document's first token, so that
/// no window holds two documents. What does not fill a window is dropped: the tail of a
/// document after its last whole window, and a document shorter than one window. (A token file
/// is one stream instead, cut across documents as nanoGPT and the paper's companion code do.)
public struct DocumentCut: Equatable, Sendable {
    public var window: Int
    public var documents: Int
    public var windows: Int
    /// Tokens of every document, end-of-text tokens included.
    public var tokens: Int
    /// Documents that, with their end-of-text token, are shorter than one window.
    public var shortDocuments: Int
    /// Tokens in no window: the tails and the short documents.
    public var droppedTokens: Int

    /// The windows of `documents` end to end, and what was kept and dropped.
    public static func cut(_ documents: [[Int32]], window: Int, eot: Int32) -> (tokens: [Int32], cut: DocumentCut) {
        precondition(window >= 1)
        var out: [Int32] = []
        var cut = DocumentCut(window: window, documents: documents.count, windows: 0, tokens: 0, shortDocuments: 0, droppedTokens: 0)
        for doc in documents {
            let length = doc.count + 1
            let whole = length / window
            cut.tokens += length
            cut.windows += whole
            cut.droppedTokens += length - whole * window
            if whole == 0 { cut.shortDocuments += 1; continue }
            let kept = whole * window
            // The end-of-text token is in a window only when the document fills its last one exactly.
            out += kept == length ? doc + [eot] : Array(doc[0..<kept])
        }
        return (out, cut)
    }

    /// One line for the log: documents, windows, and what was dropped.
    public var summary: String {
        "\(documents.formatted()) documents (\(tokens.formatted()) tokens with their end-of-text) cut into \(windows.formatted()) windows of \(window) "
            + "that never cross a document; \(droppedTokens.formatted()) tokens dropped (the tails after each document's last whole window; "
            + "\(shortDocuments.formatted()) documents shorter than one window)"
    }
}
