import Foundation
import GPT2
import TensorCore

/// Forward + backward at 1×T and 8×T, timed in rounds with the forward alone at the same shape:
/// the backward to every hook (what attribution patching needs: the logit difference's gradient
/// at each site) and the backward with every parameter's gradient (what training needs: the
/// loss's). FLOPs: the forward's, plus for the hook backward the products that carry gradients
/// to the activations (about one forward), plus for parameter gradients the products that
/// accumulate weight gradients (about another).
func benchBackward(model: GPT2Model, tokens: [Int], options o: BenchOptions) throws -> ([Measurement], [String: Double]) {
    let cfg = model.config, T = tokens.count, V = cfg.dVocab
    var rows: [Measurement] = []
    var derived: [String: Double] = [:]
    let everyHook = Set(HookName.all(nLayers: cfg.nLayers))
    for B in [1, 8] {
        let batch = (0..<B).map { b in tokens.map { ($0 + 7919 * b) % V } }
        let answer = Array(repeating: 11, count: B), wrong = Array(repeating: 13, count: B)
        let grads = ModelParameters(table: model.parameters.table)
        // Each body reuses its buffers from call to call, as the trainer, `eval` and a batched
        // job do (an `ArenaPool`): a pass's arena above 32 MiB would otherwise be mapped afresh
        // and page-faulted in every call (1.1 GB for a retained pass at 8×128).
        let pools = (0..<3).map { _ in ArenaPool() }
        func forward(_ i: Int) -> ForwardOptions {
            var f = ForwardOptions(logits: .all)
            f.arenas = pools[i]
            return f
        }
        let bodies: [() throws -> Void] = [
            {
                let pass = try model.run(batch, forward(0))
                withExtendedLifetime(pass) { blackHole(pass.logits[0]) }
            },
            {
                let (_, r) = try model.gradients(batch, metric: .logitDifference(answer: answer, wrong: wrong), forward: forward(1),
                                                 backward: BackwardOptions(hookGradients: everyHook))
                blackHole(Float(r.total))
            },
            {
                grads.arena.zero()
                let (_, r) = try model.gradients(batch, metric: .loss, forward: forward(2),
                                                 backward: BackwardOptions(parameterGradients: grads))
                blackHole(Float(r.total))
            },
        ]
        let timings = try measureInRounds(warmup: max(1, o.warmup / 2), runs: max(3, o.runs / 3), bodies)
        let forward = ForwardFLOPs(config: cfg, B: B, T: T, logitRows: B * T)
        // Hook gradients: every product's input-gradient (≈ the forward's FLOPs, the unembedding's
        // only at the last rows); parameter gradients: the weight-gradient products on top.
        let hookFlops = forward.total + forward.blocks + forward.attention + 2 * Double(B) * Double(cfg.dModel * V)
        let paramFlops = 3 * forward.total
        let shape = "\(B)×\(T)"
        rows.append(Measurement(section: "backward", name: "\(shape) forward alone (logits at all positions)",
                                seconds: timings[0].seconds, cores: timings[0].cores, gflop: forward.total / 1e9))
        rows.append(Measurement(section: "backward", name: "\(shape) forward + backward to every hook (logit diff)",
                                seconds: timings[1].seconds, cores: timings[1].cores, gflop: hookFlops / 1e9))
        rows.append(Measurement(section: "backward", name: "\(shape) forward + backward with parameter gradients (loss)",
                                seconds: timings[2].seconds, cores: timings[2].cores, gflop: paramFlops / 1e9))
        let f = Summary(timings[0].seconds).median
        derived["backward \(shape): (forward + hook backward) / forward"] = Summary(timings[1].seconds).median / f
        derived["backward \(shape): (forward + parameter backward) / forward"] = Summary(timings[2].seconds).median / f
    }
    return (rows, derived)
}
