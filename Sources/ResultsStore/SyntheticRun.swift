import Foundation

/// A deterministic, model-free `dla`-shaped run, for exercising the store: concurrent writers in
/// one process (tests) or in several processes (a CLI-level test can call `write` from two
/// `lnlens` processes on one file and compare `counts` with `expectedCounts`).
public struct SyntheticRun: Sendable, Equatable {
    public var label: String
    public var batches: Int
    public var promptsPerBatch: Int
    /// Heads are `L{l}H{h}` for l < layers, h < headsPerLayer; each gets a `dla` and a
    /// `direct_effect` row per prompt.
    public var layers: Int
    public var headsPerLayer: Int

    public init(label: String, batches: Int, promptsPerBatch: Int, layers: Int = 2, headsPerLayer: Int = 3) {
        self.label = label
        self.batches = batches
        self.promptsPerBatch = promptsPerBatch
        self.layers = layers
        self.headsPerLayer = headsPerLayer
    }

    public var nPrompts: Int { batches * promptsPerBatch }

    public var newRun: RunRecord {
        RunRecord(
            command: StoreName.dlaCommand, optionsJSON: #"{"synthetic":"\#(label)"}"#, modelPath: "synthetic/\(label)",
            modelHash: "synthetic", lnMode: "layernorm", processingJSON: "{}", promptSetPath: "synthetic.jsonl",
            promptSetHash: "synthetic-\(nPrompts)", nPrompts: nPrompts, toolVersion: "test")
    }

    /// Prompts and rows of batch `index` (prompts `index·promptsPerBatch ..< (index+1)·promptsPerBatch`).
    public func batch(_ index: Int) -> (prompts: [PromptRow], values: [ResultRow], first: Int, last: Int) {
        let first = index * promptsPerBatch, last = first + promptsPerBatch - 1
        var prompts: [PromptRow] = []
        var values: [ResultRow] = []
        for p in first...last {
            prompts.append(PromptRow(promptIndex: p, prompt: "prompt \(p)", answer: " A", wrong: " B", nTokens: 4))
            for l in 0..<layers {
                for h in 0..<headsPerLayer {
                    let de = Double((p * 7 + l * 5 + h * 3) % 11) - 5
                    values.append(ResultRow(promptIndex: p, site: "result", layer: l, head: h, quantity: StoreName.directEffect, value: de))
                    values.append(ResultRow(promptIndex: p, site: "result", layer: l, head: h, quantity: StoreName.dla, value: de * 1.25 + 0.5))
                }
            }
        }
        return (prompts, values, first, last)
    }

    /// Begins the run, writes every batch in its own transaction, finishes it; returns its id.
    public func write(to database: ResultsDatabase) throws -> Int64 {
        let id = try database.beginRun(newRun)
        for b in 0..<batches {
            let batch = batch(b)
            try database.writeBatch(
                runID: id, prompts: batch.prompts, values: batch.values, firstPrompt: batch.first, lastPrompt: batch.last)
        }
        try database.finishRun(runID: id, status: .completed, summaries: [], error: nil)
        return id
    }

    /// What `counts(runID:)` must report after `write`.
    public var expectedCounts: RunCounts {
        RunCounts(prompts: nPrompts, results: nPrompts * layers * headsPerLayer * 2, summaries: 0, batches: batches)
    }
}
