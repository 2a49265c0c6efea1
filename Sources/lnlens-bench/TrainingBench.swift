import Foundation
import GPT2
import Support
import TensorCore
import Training

/// Training throughput: one optimizer step — forward with the mean next-token loss, backward to
/// every parameter, gradient clipping and AdamW — as `lnlens train` takes it (`Trainer.runStep`),
/// on the embedded models' shape (4 layers, d 64, 8 × 128 tokens per step) and on GPT-2 small's
/// (4 × 128), each with freshly initialised weights and random tokens. The same shapes, batches
/// and thread count as `scripts/reference/time_torch_training.py`. Memory: the peak RSS a shape
/// adds to the process (VmHWM, reset before each shape, minus the RSS before it: the benchmark's
/// own GPT-2 small model is resident throughout and not counted).
func benchTraining(options o: BenchOptions) throws -> ([Measurement], [String: Double]) {
    var rows: [Measurement] = []
    var derived: [String: Double] = [:]
    let shapes: [(name: String, config: GPT2Config, sequences: Int)] = [
        ("embedded shape, L4 d64", GPT2Config(dModel: 64, nLayers: 4, nHeads: 4, nCtx: 256, dVocab: 50257), 8),
        ("GPT-2 small shape", RandomModel.config(layers: o.layers), 4),
    ]
    let seqLen = 128
    for shape in shapes {
        let reset = resetPeakRSS()
        let before = procStatusMiB("VmRSS") ?? 0
        let model = try Initialization.gpt2(config: shape.config, seed: o.seed)
        // Random ids, enough blocks for every timed step to read new ones.
        var rng = SplitMix64(seed: o.seed &+ 17)
        let steps = 1 + max(3, o.runs / 3)
        let tokens = (0..<(steps * shape.sequences * seqLen)).map { _ in Int32(rng.next() % UInt64(shape.config.dVocab)) }
        let corpus = TokenCorpus(path: "random", tokens: tokens, documents: 1)
        let settings = TrainingSettings(seqLen: seqLen, sequencesPerStep: shape.sequences, microBatch: shape.sequences,
                                        steps: steps, seed: o.seed,
                                        learningRate: LearningRateSchedule(peak: 6e-4, floor: 6e-5, warmupSteps: 0, totalSteps: steps))
        let trainer = try Trainer(model: model, corpus: corpus, settings: settings, layerNorms: nil)
        // GPT-2 small's steps alternate with sgemm at the step's own rows (its FLOP limit's rate).
        let limit = shape.config.nLayers == 4 ? nil : BlockSgemm(config: shape.config, rows: shape.sequences * seqLen, seed: o.seed)
        let timings = try measureInRounds(warmup: 1, runs: steps - 1, [{ try trainer.runStep() }] + (limit.map { [$0.body] } ?? []))
        let timing = timings[0]
        let stepTokens = Double(shape.sequences * seqLen)
        let medianSeconds = Summary(timing.seconds).median
        let label = "\(shape.name), step of \(shape.sequences)×\(seqLen)"
        rows.append(Measurement(section: "training", name: label, seconds: timing.seconds, cores: timing.cores,
                                faults: timing.faultsPerCall,
                                note: String(format: "%.0f tokens/s; peak RSS +%.0f MiB", stepTokens / medianSeconds,
                                             (procStatusMiB("VmHWM") ?? before) - before)
                                    + (reset ? "" : " (VmHWM not resettable: process peak)")))
        let key = shape.config.nLayers == 4 ? "embedded" : "small"
        derived["training \(key): tokens/s"] = stepTokens / medianSeconds
        if let limit {
            let rate = limit.gflopPerCall / Summary(timings[1].seconds).median
            rows.append(Measurement(section: "training", name: "sgemm \(limit.shape) (the FLOP limit's rate)",
                                    seconds: timings[1].seconds, cores: timings[1].cores, faults: timings[1].faultsPerCall,
                                    gflop: limit.gflopPerCall))
            let stepGFLOP = 6 * Double(shape.config.parameterCount) * stepTokens / 1e9
            derived["training small: 6·N·tokens per step, GFLOP"] = stepGFLOP
            derived["training small: FLOP limit, tokens/s"] = rate / (6 * Double(shape.config.parameterCount) / 1e9)
            derived["training small: step / FLOP limit, %"] = stepGFLOP / rate / medianSeconds * 100
        }
        if reset, let peak = procStatusMiB("VmHWM") { derived["training \(key): peak RSS added, MiB"] = peak - before }
    }
    return (rows, derived)
}

/// The FLOP limit's rate: sgemm on the MLP's c_fc shape with the training step's rows,
/// `(rows, C) · (C, M)`, each timed call running it `repeats` times (one product is ~10 ms).
/// The limit of a step is 6 · N · tokens at this rate, N the parameters with the tied `wte` once
/// (`GPT2Config.parameterCount`): forward 2N, backward 4N per token; attention's T² products
/// are not counted and the embedding lookup is counted as a product (docs/bench.md).
final class BlockSgemm {
    let shape: String
    let gflopPerCall: Double
    let body: () throws -> Void
    private let out: UnsafeMutablePointer<Float>

    init(config c: GPT2Config, rows: Int, seed: UInt64, repeats: Int = 5) {
        let C = c.dModel, M = c.dMLP
        var rng = SplitMix64(seed: seed &+ 29)
        let a = (0..<(rows * C)).map { _ in Float(rng.next() % 1000) * 1e-5 }
        let w = (0..<(C * M)).map { _ in Float(rng.next() % 1000) * 1e-5 }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: rows * M)
        self.out = out
        shape = "\(rows)×\(C) · \(C)×\(M) ×\(repeats)"
        gflopPerCall = 2 * Double(rows * C * M * repeats) / 1e9
        body = {
            for _ in 0..<repeats { sgemm(M: rows, N: M, K: C, A: a, lda: C, B: w, ldb: M, C: out, ldc: M) }
            blackHole(out[rows * M - 1])
        }
    }

    deinit { out.deallocate() }
}
