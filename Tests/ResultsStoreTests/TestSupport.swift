import Foundation
import Testing

@testable import ResultsStore

/// A fresh path in a fresh temporary folder; the folder is removed by `cleanup`.
struct TempDatabasePath {
    let folder: URL
    let path: String

    init(file: String = "results.sqlite") {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-store-\(UUID().uuidString)")
        path = folder.appendingPathComponent(file).path
    }

    func cleanup() {
        try? FileManager.default.removeItem(at: folder)
    }
}

func sampleRun(
    command: String = "dla", lnMode: String = "layernorm", promptSetHash: String = "abc123", nPrompts: Int = 4,
    modelPath: String = "models/gpt2"
) -> RunRecord {
    RunRecord(
        command: command, optionsJSON: #"{"batch_size":2}"#, modelPath: modelPath, modelHash: "hash-\(modelPath)",
        lnMode: lnMode, processingJSON: #"{"fold_ln":true}"#, promptSetPath: "prompts/ioi.jsonl",
        promptSetHash: promptSetHash, nPrompts: nPrompts, toolVersion: "0.1.0-test")
}

/// Everything stored for a run except times: what "identical rows" means for resume tests.
struct StoredRun: Equatable {
    var prompts: [PromptRow]
    var results: [ResultRow]
    var summaries: [SummaryRow]
    var completed: Set<Int>
    var status: RunStatus
    var counts: RunCounts

    init(_ db: ResultsDatabase, _ id: Int64) throws {
        prompts = try db.prompts(runID: id)
        results = try db.results(runID: id)
        summaries = try db.summaries(runID: id)
        completed = try db.completedPromptIndices(runID: id)
        status = try #require(try db.run(id: id)).status
        counts = try db.counts(runID: id)
    }
}

/// The one-line message of a store error.
func message(_ error: any Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? "\(error)"
}
