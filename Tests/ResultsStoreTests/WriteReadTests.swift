import Foundation
import Testing

@testable import ResultsStore

@Suite struct WriteReadTests {
    @Test func roundTrip() throws {
        let db = try ResultsDatabase.inMemory()
        let new = sampleRun(nPrompts: 2)
        let id = try db.beginRun(new)
        let running = try #require(try db.run(id: id))
        #expect(running.status == .running && running.endedAt == nil && running.error == nil)
        #expect(running.command == "dla" && running.lnMode == "layernorm" && running.nPrompts == 2)
        #expect(running.optionsJSON == new.optionsJSON && running.processingJSON == new.processingJSON)
        #expect(abs(running.startedAt.timeIntervalSince(new.startedAt)) < 0.001)

        let prompts = [
            PromptRow(promptIndex: 0, prompt: "When Mary and John", answer: " Mary", wrong: " John", nTokens: 5),
            PromptRow(promptIndex: 1, prompt: "The Eiffel Tower is in", answer: " Paris", wrong: nil, nTokens: 6,
                      corrupt: "The Colosseum Tower is in", tokens: ["The", " E", "iff", "el", " Tower", " is"]),
        ]
        let values = [
            ResultRow(promptIndex: 0, site: "embed", quantity: "dla", value: 0.25),
            ResultRow(promptIndex: 0, site: "result", layer: 0, head: 1, quantity: "direct_effect", value: -1.5e-7),
            ResultRow(promptIndex: 1, site: "mlp_out", layer: 11, quantity: "dla", value: 3),
            ResultRow(promptIndex: 1, site: "pos_embed", quantity: "dla", value: .infinity),
            ResultRow(promptIndex: 1, site: "z", layer: 2, position: 4, head: 3, quantity: "atp", value: -2),
            ResultRow(promptIndex: 1, site: "z", layer: 2, head: 3, quantity: "atp", value: 7),
        ]
        try db.writeBatch(runID: id, prompts: prompts, values: values, firstPrompt: 0, lastPrompt: 1)
        let summaries = [
            SummaryRow(scope: "heads", key: "all", metric: "nmae", value: 49.1),
            SummaryRow(scope: "check", key: "components_sum", metric: "max_abs_error", value: 2e-6),
            SummaryRow(scope: "head", key: "L0H0", metric: "nmae", value: .nan),
        ]
        try db.finishRun(runID: id, status: .completed, summaries: summaries, error: nil)

        #expect(try db.prompts(runID: id) == prompts)
        #expect(try db.results(runID: id) == [values[0], values[1], values[2], values[3], values[5], values[4]])
        #expect(try db.results(runID: id, site: "z") == [values[5], values[4]])
        #expect(try db.results(runID: id, quantity: "direct_effect") == [values[1]])
        #expect(try db.summaries(runID: id) == summaries.sorted { ($0.scope, $0.key) < ($1.scope, $1.key) })
        #expect(try db.completedPromptIndices(runID: id) == [0, 1])
        let done = try #require(try db.run(id: id))
        #expect(done.status == .completed && done.endedAt != nil)
        #expect(try db.runs() == [done])
        #expect(try db.run(id: 42) == nil)
    }

    @Test func failedRunKeepsItsError() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun())
        try db.finishRun(runID: id, status: .failed, summaries: [], error: "tensor h.0.attn.c_attn.weight missing")
        let run = try #require(try db.run(id: id))
        #expect(run.status == .failed && run.error == "tensor h.0.attn.c_attn.weight missing")
        #expect(throws: ResultsStoreError.finishWithRunning(id: id, path: ":memory:")) {
            try db.finishRun(runID: id, status: .running, summaries: [], error: nil)
        }
    }

    @Test func writesNeedARunningRun() throws {
        let db = try ResultsDatabase.inMemory()
        let synthetic = SyntheticRun(label: "w", batches: 2, promptsPerBatch: 2)
        let id = try synthetic.write(to: db)
        let batch = synthetic.batch(0)
        let error = #expect(throws: ResultsStoreError.self) {
            try db.writeBatch(runID: id, prompts: batch.prompts, values: batch.values, firstPrompt: 0, lastPrompt: 1)
        }
        #expect(message(error!) == "run \(id) in :memory: is completed, not running: resume it explicitly before writing more results")
        #expect(throws: ResultsStoreError.alreadyCompleted(id: id, path: ":memory:")) { try db.claimRun(id: id) }
        #expect(throws: ResultsStoreError.noSuchRun(id: 77, path: ":memory:")) {
            try db.writeBatch(runID: 77, prompts: [], values: [], firstPrompt: 0, lastPrompt: 0)
        }
        #expect(throws: ResultsStoreError.noSuchRun(id: 77, path: ":memory:")) { try db.results(runID: 77) }
    }

    @Test func badBatchesAreRefusedWhole() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun(nPrompts: 4))
        let good = ResultRow(promptIndex: 0, site: "result", layer: 0, head: 0, quantity: "dla", value: 1)
        let cases: [([ResultRow], Int, Int, String)] = [
            ([good, ResultRow(promptIndex: 1, site: "result", layer: 0, head: 0, quantity: "dla", value: .nan)], 0, 1,
             "dla of result for prompt 1 is NaN"),
            ([good, ResultRow(promptIndex: 2, site: "result", layer: 0, head: 0, quantity: "dla", value: 1)], 0, 1,
             "result for prompt 2 lies outside the batch 0...1"),
            ([good], 1, 0, "prompt range 1...0 is empty or negative"),
            ([ResultRow(promptIndex: 4, site: "result", layer: 0, head: 0, quantity: "dla", value: 1)], 4, 4,
             "prompt 4 is past the run's n_prompts 4"),
            ([ResultRow(promptIndex: 0, site: "resid_pre", layer: -1, quantity: "atp", value: 1)], 0, 0,
             "result for prompt 0 at resid_pre has a negative layer, position or head"),
        ]
        for (values, first, last, reason) in cases {
            #expect(throws: ResultsStoreError.invalidBatch(id: id, reason: reason, path: ":memory:")) {
                try db.writeBatch(runID: id, prompts: [], values: values, firstPrompt: first, lastPrompt: last)
            }
        }
        #expect(try db.counts(runID: id) == RunCounts(prompts: 0, results: 0, summaries: 0, batches: 0))
        #expect(try db.completedPromptIndices(runID: id).isEmpty)
    }

    @Test func aBatchFailingInsideSQLiteLeavesNothing() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun(nPrompts: 4))
        // Make SQLite fail after the batch's result rows went in: without batches_done the
        // progress marker cannot be written, and the whole batch must roll back.
        let values = [
            ResultRow(promptIndex: 0, site: "result", layer: 0, head: 0, quantity: "dla", value: 1),
            ResultRow(promptIndex: 1, site: "result", layer: 0, head: 1, quantity: "dla", value: 2),
        ]
        try db.writeBatch(runID: id, prompts: [], values: values, firstPrompt: 0, lastPrompt: 1)
        try #require(db.writer).write { try $0.execute(sql: "DROP TABLE batches_done") }
        #expect(throws: ResultsStoreError.self) {
            try db.writeBatch(
                runID: id, prompts: [], values: [ResultRow(promptIndex: 2, site: "result", layer: 0, head: 0, quantity: "dla", value: 3)],
                firstPrompt: 2, lastPrompt: 2)
        }
        #expect(try db.results(runID: id) == values)
    }

    @Test func trainStepsAndEstimatorErrorsRoundTrip() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun(command: "train", nPrompts: 3))
        let steps = [
            TrainStepRow(step: 0, loss: 10.5, lr: 1e-4, gradNorm: 3, tokens: 512, seconds: 0.25),
            TrainStepRow(step: 1, loss: 9.75, auxLoss: 0.01, lr: 2e-4, tokens: 1024, event: "ln_2 of block 0 removed"),
        ]
        try db.writeTrainSteps(runID: id, steps: steps)
        let errors = [
            ErrorRow(site: "resid_pre", method: "atp", layer: nil, normalized: false, metric: "nmae", value: 12),
            ErrorRow(site: "resid_pre", method: "atp", layer: 3, normalized: true, metric: "pearson", value: .nan),
        ]
        try db.finishRun(runID: id, status: .completed, summaries: [], errors: errors, error: nil)
        #expect(try db.trainSteps(runID: id) == steps)
        #expect(try db.estimatorErrors(runID: id) == errors)
        #expect(throws: ResultsStoreError.self) { try db.writeTrainSteps(runID: id, steps: steps) }
    }

    /// `lnlens runs`' `prompts` column counts what `n_prompts` counts: prompts stored for dla and
    /// patch, windows scored for eval (each window once, however many models), steps for training.
    @Test func runsTableCountsEachCommandsUnits() throws {
        let db = try ResultsDatabase.inMemory()
        let dla = try db.beginRun(sampleRun(command: "dla", nPrompts: 4))
        try db.writeBatch(runID: dla, prompts: [PromptRow(promptIndex: 0, prompt: "a b", answer: " c", wrong: nil, nTokens: 2)],
                          values: [ResultRow(promptIndex: 0, site: "embed", quantity: "dla", value: 1)], firstPrompt: 0, lastPrompt: 0)
        let eval = try db.beginRun(sampleRun(command: "eval", nPrompts: 5))
        let losses = [0, 1, 2].flatMap { w in ["m1", "m2"].map { ResultRow(promptIndex: w, site: $0, quantity: "loss", value: 5) } }
        try db.writeBatch(runID: eval, prompts: [], values: losses, firstPrompt: 0, lastPrompt: 2)
        let train = try db.beginRun(sampleRun(command: "train", nPrompts: 10))
        try db.writeTrainSteps(runID: train, steps: (0..<7).map { TrainStepRow(step: $0, loss: 1, lr: 1e-4, tokens: 64 * ($0 + 1)) })
        let table = try db.runsTable()
        #expect(table.columns[5] == "prompts" && table.columns[6] == "n_prompts")
        #expect(table.rows.map { $0[5] } == [.int(1), .int(3), .int(7)])
        #expect(table.rows.map { $0[6] } == [.int(4), .int(5), .int(10)])
    }

    /// `lnlens runs` names each run's prompt set (or text) by its file name.
    @Test func runsTableShowsThePromptSet() throws {
        let db = try ResultsDatabase.inMemory()
        for path in ["prompts/ioi.jsonl", "/data/sets/paper_ioi.jsonl", "heldout", "/tmp/a b/topic.jsonl"] {
            var run = sampleRun()
            run.promptSetPath = path
            _ = try db.beginRun(run)
        }
        let table = try db.runsTable()
        #expect(Array(table.columns.prefix(5)) == ["id", "command", "model", "ln_mode", "prompt_set"])
        #expect(table.rows.map { $0[4] } == [.text("ioi.jsonl"), .text("paper_ioi.jsonl"), .text("heldout"), .text("topic.jsonl")])
    }
}
