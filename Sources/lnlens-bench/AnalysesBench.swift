import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import TensorCore
import Training

/// The one-pass analyses (`sinks`, `norms`, `lens`) and `neurons` over `windows` windows of 128 random tokens,
/// each as its whole job storing every row in SQLite, beside a plain forward pass over the same
/// windows (8 per pass, every logit, as `eval` runs it). The derived ratios are each job's time
/// over the forward's.
func benchAnalyses(model: GPT2Model, options o: BenchOptions, windows: Int = 100, context: Int = 128)
    throws -> ([Measurement], [String: Double]) {
    let stream = RandomModel.tokens(count: windows * context, dVocab: model.config.dVocab, seed: o.seed)
    let corpus = TokenCorpus(path: "bench-random", tokens: stream.map { Int32($0) }, documents: 1)
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-bench-analyses-\(getpid())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var options = AnalysisOptions()
    (options.computation.batch, options.computation.chunkSize, options.computation.context) = (8, 32, context)
    var round = 0
    func job<A: SequenceAnalysis>(_: A.Type, positions: String? = nil) -> () throws -> Void {
        var options = options
        options.computation.positions = positions
        return {
            round += 1
            let db = try ResultsDatabase(path: dir.appendingPathComponent("r\(round).sqlite").path)
            _ = try AnalysisJob(analysis: A(options: options), model: model, modelPath: "bench", modelHash: "bench",
                                input: .windows(corpus, context: context), options: options, toolVersion: "bench").run(db: db)
        }
    }
    var forward = ForwardOptions(logits: .all)
    forward.arenas = ArenaPool()
    let timings = try measureInRounds(warmup: 0, runs: max(1, o.runs / 5), [
        {
            for start in stride(from: 0, to: windows, by: 8) {
                let batch = (start..<min(windows, start + 8)).map { corpus.block($0, seqLen: context) }
                blackHole(try model.run(batch, forward).logits[0])
            }
        },
        job(SinkAnalysis.self), job(NormAnalysis.self), job(LensAnalysis.self), job(LensAnalysis.self, positions: "last"),
        {   // neurons: the one pass the means need (resid_post kept, then every logit from it) …
            blackHole(Float(try NeuronAblation(model: model, windows: (0..<windows).map { corpus.block($0, seqLen: context) }, batch: 8)
                .base.loss[0]))
        },
        {   // … and with 3 neurons mean-ablated one at a time (each a rank-one change of the logits)
            let ablation = try NeuronAblation(model: model, windows: (0..<windows).map { corpus.block($0, seqLen: context) }, batch: 8,
                                              ablations: [[0], [1], [2]])
            for n in 0..<3 { blackHole(Float(ablation.ablated[[n]]!.loss[0])) }
        },
        {
            round += 1
            var neurons = NeuronOptions()
            (neurons.computation.batch, neurons.computation.windows, neurons.computation.neurons) = (8, windows, "0,1,2")
            _ = try NeuronJob(model: model, modelPath: "bench", modelHash: "bench", input: .windows(corpus, context: context),
                              options: neurons, toolVersion: "bench")
                .run(db: try ResultsDatabase(path: dir.appendingPathComponent("r\(round).sqlite").path))
        },
    ])
    let what = "\(windows) windows × \(context) tokens"
    let names = ["plain forward (8 windows per pass, every logit)", "sinks job (rows stored)", "norms job (rows stored)",
                 "lens job, every position's next token (rows stored)",
                 "lens job, --positions last: each window's last next token (rows stored)",
                 "neurons: the pass for the mean activations (resid_post kept, every logit from it)",
                 "neurons: that pass + 3 neurons mean-ablated one at a time (rank-one changes of the logits)",
                 "neurons job, top 3: weights and W_U's SVD, 3 single + 3 cumulative ablations (rows stored)"]
    let rows = zip(names, timings).map { Measurement(section: "analyses", name: "\($0), \(what)", seconds: $1.seconds, cores: $1.cores) }
    var derived: [String: Double] = [:]
    for (name, t) in zip(["sinks job", "norms job", "lens job", "lens job --positions last", "neurons pass", "neurons pass + 3 single ablations", "neurons job"],
                         timings.dropFirst()) {
        derived["analyses: \(name) / plain forward"] = median(t.seconds) / median(timings[0].seconds)
    }
    derived["analyses: neurons, one neuron's ablation / plain forward"] =
        (median(timings[6].seconds) - median(timings[5].seconds)) / 3 / median(timings[0].seconds)
    return (rows, derived)
}

private func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
