import Foundation
import GPT2
import TensorCore

/// Phase-by-phase timing of the forward pass (`--profile`): the real forward, run with a
/// `PhaseTimes` that each of its op calls reports to, so the profile times exactly the kernels
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
