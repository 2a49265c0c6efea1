import Foundation
import GPT2
import TensorCore

/// Phase-by-phase timing of the forward pass (`--profile`): the real forward, run with a
/// `PhaseTimes` that its hook runner laps at every hook point, so the profile times exactly the kernels
/// `GPT2Model.run` calls (hook bookkeeping included in the phase it follows).
func benchProfile(model: GPT2Model, tokens: [Int], rates: SgemmRates, options o: BenchOptions) throws -> [Measurement] {
    let cfg = model.config
    let B = 1, T = tokens.count, N = B * T
    let C = cfg.dModel, NH = cfg.nHeads, dh = cfg.dHead, M = cfg.dMLP, V = cfg.dVocab
    let L = Double(cfg.nLayers)
    let layerFlops = 2 * Double(N)
    let phases: [(name: String, flops: Double?, reference: Double)] = [
        ("embed", nil, rates.block), ("layernorm", nil, rates.block),
        ("qkv matmul", layerFlops * Double(C * 3 * C) * L, rates.block),
        ("attention scores", 2 * Double(B * NH * T * T * dh) * L, rates.block), ("softmax", nil, rates.block),
        ("attention values", 2 * Double(B * NH * T * T * dh) * L, rates.block),
        ("attn out matmul", layerFlops * Double(C * C) * L, rates.block), ("residual adds", nil, rates.block),
        ("mlp in matmul", layerFlops * Double(C * M) * L, rates.block), ("gelu_new", nil, rates.block),
        ("mlp out matmul", layerFlops * Double(M * C) * L, rates.block),
        ("unembed", layerFlops * Double(C * V), rates.unembed),
    ]
    var perRun: [[String: Double]] = []
    for i in 0..<(o.warmup + o.runs) {
        let times = PhaseTimes()
        let pass = try model.run([tokens], ForwardOptions(logits: .all, profile: times))
        withExtendedLifetime(pass) { blackHole(pass.logits[0]) }
        if i >= o.warmup { perRun.append(times.seconds) }
    }
    return phases.map { phase in
        Measurement(section: "profile", name: phase.name, seconds: perRun.map { $0[phase.name] ?? 0 }, cores: nil,
                    gflop: phase.flops.map { $0 / 1e9 }, reference: phase.reference)
    }
}

/// Phase-by-phase timing of forward + backward (`--profile` with the backward section): the
/// real `gradients` call, its forward and its backward each reporting to a `PhaseTimes`, for
/// the two backward cases the backward section times (every hook's gradient of the logit
/// difference; every parameter's gradient of the loss), at 1×T and 8×T. Hook bookkeeping is a
/// phase of its own in the backward ("hook gradients").
func benchBackwardProfile(model: GPT2Model, tokens: [Int], options o: BenchOptions) throws -> [Measurement] {
    var rows: [Measurement] = []
    for B in [1, 8] {
        let inputs = BackwardCases(model: model, tokens: tokens, B: B)
        for c in inputs.cases {
            let pool = ArenaPool()  // as the backward section: buffers reused from call to call
            var forward: [[String: Double]] = [], backward: [[String: Double]] = []
            for i in 0..<(max(1, o.warmup / 2) + max(3, o.runs / 3)) {
                let f = PhaseTimes(), b = PhaseTimes()
                var options = c.options()
                options.profile = b
                var forwardOptions = ForwardOptions(logits: .all, profile: f)
                forwardOptions.arenas = pool
                let (_, r) = try model.gradients(inputs.batch, metric: c.metric, forward: forwardOptions, backward: options)
                blackHole(Float(r.total))
                if i >= max(1, o.warmup / 2) {
                    forward.append(f.seconds)
                    backward.append(b.seconds)
                }
            }
            for (direction, runs) in [("forward", forward), ("backward", backward)] {
                for phase in Set(runs.flatMap(\.keys)).sorted() {
                    rows.append(Measurement(section: "profile \(B)×\(tokens.count) \(c.name)", name: "\(direction): \(phase)",
                                            seconds: runs.map { $0[phase] ?? 0 }, cores: nil))
                }
            }
        }
    }
    return rows
}
