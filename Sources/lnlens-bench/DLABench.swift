import Analysis
import Foundation
import GPT2
import Jobs
import Support
import ResultsStore
import Tokenizer

/// DLA and the exact direct effect of every component (embed, pos_embed, every head, each
/// layer's b_O and MLP) over a batch of the paper's IOI prompts: the forward pass plus the
/// attribution, then the same through the whole `dla` job storing every row in SQLite.
/// Reported per prompt (the batch's median time divided by its prompt count).
func benchDLA(model: GPT2Model, options o: BenchOptions, prompts n: Int = 64) throws -> [Measurement] {
    let tok = try GPT2Tokenizer.load(directory: Resources.models.appendingPathComponent("tokenizer"))
    let all = try PromptSet.load(url: Resources.prompts.appendingPathComponent("paper_ioi.jsonl"), tokenizer: tok,
                                 skipInvalid: false)
    var set = all
    set.examples = Array(all.examples.prefix(n))
    let batch = set.examples
    let tokens = batch.map(\.tokens)
    let targets = batch.enumerated().map { i, ex in
        AttributionTarget(prompt: ex.index, row: i, position: ex.tokens.count - 1, answerID: ex.answerID, wrongID: ex.wrongID)
    }
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-bench-\(getpid())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var round = 0
    let timings = try measureInRounds(warmup: 1, runs: max(3, o.runs / 3), [
        {
            let r = try DirectLogitAttribution.attribute(model: model, tokens: tokens, targets: targets)
            blackHole(Float(r.rows.last?.directEffect ?? 0))
        },
        {
            round += 1
            let db = try ResultsDatabase(path: dir.appendingPathComponent("r\(round).sqlite").path)
            var runner = DLAJob(model: model, modelPath: "bench", modelHash: "bench", input: .prompts(set),
                                   decode: { tok.decode($0) }, toolVersion: "bench")
            runner.batchSize = 32
            _ = try runner.run(db: db)
        },
    ])
    let perPrompt = { (t: Timing) in t.seconds.map { $0 / Double(n) } }
    let len = tokens[0].count
    return [
        Measurement(section: "dla", name: "per prompt: forward + DLA + direct effect, \(n) IOI prompts × \(len) tokens in one batch",
                    seconds: perPrompt(timings[0]), cores: timings[0].cores,
                    note: "\(2 + model.config.nLayers * (model.config.nHeads + 2)) components per prompt"),
        Measurement(section: "dla", name: "per prompt: the whole dla job (batches of 32, every row stored in SQLite)",
                    seconds: perPrompt(timings[1]), cores: timings[1].cores),
    ]
}
