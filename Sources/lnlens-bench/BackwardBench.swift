import Foundation
import GPT2
import TensorCore

/// Forward + backward at 1×T and 8×T, timed in rounds with the forward alone at the same shape:
/// the backward to every hook (what attribution patching needs: the logit difference's gradient
/// at each site) and the backward with every parameter's gradient (what training needs: the
/// loss's). FLOPs: the forward's, plus for the hook backward the products that carry gradients
/// to the activations (about one forward), plus for parameter gradients the products that
/// accumulate weight gradients (about another).
/// The two backward cases at batch size B: their batch of B prompts of `tokens`' length, and for
/// each its metric and a fresh `BackwardOptions` per call (the parameter case zeroes its gradient
/// buffers first). The backward section and its `--profile` both run these.
struct BackwardCases {
    struct Case {
        let name: String
        let metric: Metric
        let options: () -> BackwardOptions
    }

    let batch: [[Int]]
    let cases: [Case]

    init(model: GPT2Model, tokens: [Int], B: Int) {
        let V = model.config.dVocab
        batch = (0..<B).map { b in tokens.map { ($0 + 7919 * b) % V } }
        let answer = Array(repeating: 11, count: B), wrong = Array(repeating: 13, count: B)
        let everyHook = Set(HookName.all(nLayers: model.config.nLayers))
        let grads = try! ModelParameters(table: model.parameters.table)
        cases = [
            Case(name: "hook", metric: .logitDifference(answer: answer, wrong: wrong),
                 options: { BackwardOptions(hookGradients: everyHook) }),
            Case(name: "param", metric: .loss, options: {
                grads.arena.zero()
                return BackwardOptions(parameterGradients: grads)
            }),
        ]
    }
}

func benchBackward(model: GPT2Model, tokens: [Int], options o: BenchOptions) throws -> ([Measurement], [String: Double]) {
    let cfg = model.config, T = tokens.count, V = cfg.dVocab
    var rows: [Measurement] = []
    var derived: [String: Double] = [:]
    for B in [1, 8] {
        let inputs = BackwardCases(model: model, tokens: tokens, B: B), batch = inputs.batch
        // Each body reuses its buffers from call to call, as the trainer, `eval` and a batched
        // job do (an `ArenaPool`): a pass's arena above 32 MiB would otherwise be mapped afresh
        // and page-faulted in every call (1.1 GB for a retained pass at 8×128).
        let pools = (0...inputs.cases.count).map { _ in ArenaPool() }
        func pooled(_ i: Int) -> ForwardOptions {
            var f = ForwardOptions(logits: .all)
            f.arenas = pools[i]
            return f
        }
        let bodies: [() throws -> Void] = [{
            let pass = try model.run(batch, pooled(0))
            withExtendedLifetime(pass) { blackHole(pass.logits[0]) }
        }] + inputs.cases.enumerated().map { i, c in {
            let (_, r) = try model.gradients(batch, metric: c.metric, forward: pooled(i + 1), backward: c.options())
            blackHole(Float(r.total))
        } }
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
