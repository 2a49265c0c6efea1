import Foundation
import GPT2
import TensorCore

/// How far the next-token distributions of models given the same tokens are apart, as the
/// companion code measures it (submarat/removing-layer-norm at a15a638, `mech_interp/
/// run_inference.py` with `metrics.JSDivergence`, read by `inference_analysis/analyse_models.py`).
/// Per predicting position p of a sequence (0 … T − 2, scored against token p + 1), for each model
/// k with probabilities P_k = softmax(logits_k[p]):
///
///     ce_k      = −log(P_k[target] + 1e-10)
///     entropy_k = −Σ_v P_k[v] · log P_k[v]          (the companion: log(P + 1e-10); ≤ V·1e-10 apart)
///     maxProb_k = max_v P_k[v],  correct_k = [target is a top token]   (its calibration's inputs)
///
/// and for each model k ≥ 1 against model 0 (the original), with the companion's smoothing
/// P' = (P + 1e-8) / (1 + V·1e-8) and M = (P'_0 + P'_k) / 2:
///
///     jsd_k = ½ Σ_v P'_0 (log P'_0 − log M) + ½ Σ_v P'_k (log P'_k − log M)
///     kl_k  = Σ_v P'_0 (log P'_0 − log P'_k)          KL(original ‖ model k), nats
///
/// docs/analyses.md has the choices where the companion is silent.
public enum Divergence {
    /// The companion's smoothing of probabilities before JSD (`JSDivergence(eps=1e-8)`).
    public static let smoothing: Float = 1e-8
    /// The companion's guard inside the CE's logarithm.
    public static let ceGuard = 1e-10

    /// One predicting position: each model's CE, entropy, top probability and whether its top
    /// token is the target (1 or 0), and for each model after the first its JSD and KL against the
    /// first (index k − 1).
    public struct Token: Sendable, Equatable {
        public var ce: [Double] = [], entropy: [Double] = [], maxProb: [Double] = [], correct: [Double] = []
        public var jsd: [Double] = [], kl: [Double] = []
    }

    /// Per sequence of `tokens` (B of equal length T ≥ 2), per position 0 … T − 2, the measures of
    /// `models` (the original first; the same vocabulary), one forward pass each.
    public static func measure(models: [GPT2Model], tokens: [[Int]]) throws -> [[Token]] {
        precondition(models.count >= 1 && !tokens.isEmpty)
        let V = models[0].config.dVocab, T = tokens[0].count, B = tokens.count
        let passes = try models.map { try $0.run(tokens, ForwardOptions(logits: .all)) }
        let logits = passes.map { UnsafeSendable(UnsafePointer($0.logits)) }
        let targets = tokens.map { Array($0.dropFirst()) }
        let P = T - 1
        var out = [Token](repeating: Token(), count: B * P)
        out.withUnsafeMutableBufferPointer { buffer in
            let ob = UnsafeSendable(buffer.baseAddress!)
            parallelChunks(B * P, minimum: 2) { lo, hi in
                let scratch = Scratch(models: models.count, V: V)
                for i in lo..<hi {
                    let (b, p) = (i / P, i % P)
                    let rows = logits.map { $0.value + (b * T + p) * V }
                    ob.value[i] = token(rows, target: targets[b][p], V: V, scratch: scratch)
                }
            }
        }
        withExtendedLifetime(passes) {}
        return (0..<B).map { Array(out[$0 * P ..< ($0 + 1) * P]) }
    }

    /// Per-row buffers: each model's smoothed probabilities and their logarithms, `(models, V)`.
    final class Scratch {
        let probs: FloatPointer, logs: FloatPointer, count: Int
        init(models: Int, V: Int) {
            count = models * V
            (probs, logs) = (.allocate(capacity: count), .allocate(capacity: count))
        }
        deinit { probs.deallocate(); logs.deallocate() }
    }

    /// The measures of one position from each model's logit row `(V)`.
    static func token(_ rows: [UnsafePointer<Float>], target: Int, V: Int, scratch s: Scratch) -> Token {
        var t = Token()
        let denominator = 1 + Float(V) * smoothing
        for (k, z) in rows.enumerated() {
            let (probs, logs) = (s.probs + k * V, s.logs + k * V)
            let m = maxFloats(z, count: V)
            let total = expShifted(out: probs, x: z, shift: m, count: V)
            let lse = Double(m) + log(total)
            t.ce.append(-log(exp(Double(z[target]) - lse) + ceGuard))
            t.maxProb.append(exp(Double(m) - lse))
            t.correct.append(z[target] == m ? 1 : 0)
            let inverse = Float(1 / total)
            let weighted = blockSum(V) { v in
                let p = probs[v] * inverse
                let smoothed = (p + smoothing) / denominator
                probs[v] = smoothed
                logs[v] = log(smoothed)
                return p * z[v]
            }
            t.entropy.append(lse - weighted)
        }
        let (p, lp) = (s.probs, s.logs)
        for k in rows.indices.dropFirst() {
            let (q, lq) = (s.probs + k * V, s.logs + k * V)
            t.jsd.append(0.5 * blockSum(V) { v in
                let lm = log(0.5 * (p[v] + q[v]))
                return p[v] * (lp[v] - lm) + q[v] * (lq[v] - lm)
            })
            t.kl.append(blockSum(V) { v in p[v] * (lp[v] - lq[v]) })
        }
        return t
    }

    /// Σ_v term(v) over 0..<V: in Float over blocks of 512, the blocks in Double.
    @inline(__always)
    static func blockSum(_ V: Int, _ term: (Int) -> Float) -> Double {
        var total = 0.0, block: Float = 0
        for v in 0..<V {
            block += term(v)
            if v & 511 == 511 { total += Double(block); block = 0 }
        }
        return total + Double(block)
    }

    /// Bytes beyond one forward pass without logits that measuring one sequence of T tokens
    /// holds: every model's logits, and the other models' passes.
    public static func cacheBytes(T: Int, config cfg: GPT2Config, models: Int) -> Int {
        models * T * cfg.dVocab * MemoryLayout<Float>.stride
            + (models - 1) * ForwardPass.footprint(B: 1, T: T, config: cfg, logits: .none, backward: false)
    }
}
