import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import TensorCore
import Training

/// `compare` of `model` and two more models of its shape (other seeds) over `windows` windows of
/// 128 random tokens, as its whole job storing every row and the bootstrap summaries in SQLite,
/// beside one plain forward per model over the same windows (8 per pass, every logit, as `eval`
/// runs it). The derived ratio is the job's time over the three forwards'.
func benchCompare(model: GPT2Model, options o: BenchOptions, windows: Int = 100, context: Int = 128)
    throws -> ([Measurement], [String: Double]) {
    let models = try [model] + [1, 2].map { try RandomModel.make(config: model.config, seed: o.seed &+ UInt64($0)) }
    let stream = RandomModel.tokens(count: windows * context, dVocab: model.config.dVocab, seed: o.seed)
    let corpus = TokenCorpus(path: "bench-random", tokens: stream.map { Int32($0) }, documents: 1)
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-bench-compare-\(getpid())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var options = AnalysisOptions()
    (options.computation.batch, options.computation.chunkSize, options.computation.context) = (8, 32, context)
    var analysis = CompareAnalysis(options: options)
    analysis.others = Array(models.dropFirst())
    var forward = ForwardOptions(logits: .all)
    forward.arenas = ArenaPool()
    var round = 0
    let timings = try measureInRounds(warmup: 0, runs: max(1, o.runs / 5), [
        {
            for m in models {
                for start in stride(from: 0, to: windows, by: 8) {
                    let batch = (start..<min(windows, start + 8)).map { corpus.block($0, seqLen: context) }
                    blackHole(try m.run(batch, forward).logits[0])
                }
            }
        },
        {
            round += 1
            let db = try ResultsDatabase(path: dir.appendingPathComponent("r\(round).sqlite").path)
            _ = try AnalysisJob(analysis: analysis, model: model, modelPath: "bench", modelHash: "bench",
                                input: .windows(corpus, context: context), options: options, toolVersion: "bench").run(db: db)
        },
    ])
    let what = "\(windows) windows × \(context) tokens, 3 models"
    let names = ["plain forward of each model (8 windows per pass, every logit)", "compare job (rows and bootstrap summaries stored)"]
    let rows = zip(names, timings).map { Measurement(section: "analyses", name: "\($0), \(what)", seconds: $1.seconds, cores: $1.cores) }
    let ratio = timings[1].seconds.sorted()[timings[1].seconds.count / 2] / timings[0].seconds.sorted()[timings[0].seconds.count / 2]
    return (rows, ["analyses: compare job / one plain forward per model": ratio])
}
