import Foundation
import GPT2
import Tokenizer
import Training

/// Paths of the committed fixtures and the repository's own files.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repo = root.deletingLastPathComponent().deletingLastPathComponent()
    static func model(_ name: String) -> URL { root.appendingPathComponent("models/\(name)") }
    static func reference(_ file: String) -> URL { root.appendingPathComponent("reference/\(file)") }

    static func tokenizer() throws -> GPT2Tokenizer {
        try GPT2Tokenizer.load(directory: repo.appendingPathComponent("models/tokenizer"))
    }

    /// The held-out corpus, tokenized (57k tokens: small enough for tests).
    static func heldout() throws -> TokenCorpus {
        let tok = try tokenizer()
        return try TokenCorpus.load(repo.appendingPathComponent("corpus/heldout.txt"), tokenizer: tok, eot: tok.endOfTextID)
    }

    /// tiny-ln (2 layers, d 32) with its own parameters, ready to train.
    static func tinyModel() throws -> GPT2Model {
        try GPT2Model(checkpoint: Checkpoint.open(model("tiny-ln").path), processing: .none)
    }
}

/// A fresh temporary folder, removed by the caller.
func temporaryFolder(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Every float of a model's parameters (for bitwise comparisons).
func parameterBits(_ m: GPT2Model) -> [UInt32] {
    Array(UnsafeBufferPointer(start: m.parameters.arena.base, count: m.parameters.table.count)).map(\.bitPattern)
}
