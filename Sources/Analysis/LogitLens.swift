import Foundation
import GPT2
import TensorCore

/// The logit lens as TransformerLens 2.16.1 computes it: `cache.accumulated_resid(layer=None,
/// incl_mid, apply_ln=True) @ W_U + b_U`. Each residual read (`resid_pre` of every layer, with
/// `inclMid` also `resid_mid`, then the last `resid_post`) is centred and divided by the cached
/// `ln_final.hook_scale` of the final residual at that position — TransformerLens's
/// `apply_ln_to_stack` with layer = n_layers, the final scale for every layer, not each layer's
/// own — then unembedded (with the final LayerNorm's weight and bias when they are not folded
/// into W_U). For an LN-free model the scale is the constant √ε: the lens is exactly linear.
/// Per target (position, token): the token's probability, its rank (1 + the number of tokens
/// with a strictly larger logit), whether it is the top token, and KL(final ‖ layer) in nats.
public enum LogitLens {
    /// A position of a sequence and the token it is scored against.
    public struct Target: Sendable, Equatable {
        public var position: Int
        public var token: Int
        public init(position: Int, token: Int) { (self.position, self.token) = (position, token) }
    }

    /// Means over one sequence's targets, at one residual.
    public struct Measure: Sendable, Equatable {
        public var prob = 0.0, rank = 0.0, top1 = 0.0, kl = 0.0
    }

    /// The residuals read, in TransformerLens's order (`0_pre`, `0_mid`, `1_pre`, …, `final_post`).
    public static func sites(nLayers: Int, inclMid: Bool) -> [HookName] {
        (0..<nLayers).flatMap { l in [HookName(.residPre, layer: l)] + (inclMid ? [HookName(.residMid, layer: l)] : []) }
            + [HookName(.residPost, layer: nLayers - 1)]
    }

    /// TransformerLens's label of a residual: `3_pre`, `3_mid`, `final_post`.
    public static func label(_ site: HookName, nLayers: Int) -> String {
        site.point == .residPost ? "final_post" : "\(site.layer!)_\(site.point == .residMid ? "mid" : "pre")"
    }

    /// For each of `tokens` (B sequences of equal length) and each of `sites`, the means over that
    /// sequence's `targets`.
    public static func measure(model: GPT2Model, tokens: [[Int]], targets: [[Target]], inclMid: Bool) throws -> [[Measure]] {
        let cfg = model.config
        let reads = sites(nLayers: cfg.nLayers, inclMid: inclMid)
        let scaleHook = HookName(.lnFinalScale)
        let pass = try model.run(tokens, ForwardOptions(cache: Set(reads + [scaleHook]), logits: .none))
        let T = tokens[0].count
        return try (0..<tokens.count).map { b in
            let rows = targets[b].map { b * T + $0.position }
            if let bad = targets[b].first(where: { $0.position < 0 || $0.position >= T || $0.token < 0 || $0.token >= cfg.dVocab }) {
                throw GPT2Error.tokenOutOfRange(id: bad.token, dVocab: cfg.dVocab)
            }
            let scale = rows.map { pass.cache[scaleHook]!.data[$0] }
            let residuals = reads.map { gather(pass.cache[$0]!.data, rows: rows, C: cfg.dModel) }
            return measure(model: model, residuals: residuals, scale: scale, targets: targets[b].map(\.token))
        }
    }

    /// The measures of R target rows given each site's residual rows `[R · C]` (the final one last)
    /// and the final scale of each row.
    static func measure(model: GPT2Model, residuals: [[Float]], scale: [Float], targets: [Int]) -> [Measure] {
        let C = model.config.dModel, V = model.config.dVocab, R = targets.count
        guard R > 0 else { return residuals.map { _ in Measure() } }
        let final = logits(model, residuals.last!, scale: scale)
        let finalStats = rowStats(final, rows: R, V: V)
        var out: [Measure] = []
        for (i, x) in residuals.enumerated() {
            precondition(x.count == R * C)
            let z = i == residuals.count - 1 ? final : logits(model, x, scale: scale)
            out.append(compare(z, final: final, finalStats: finalStats, targets: targets, V: V))
        }
        return out
    }

    /// `(R, V)` lens logits of residual rows `x (R, C)`: centred, divided by `scale`, through the
    /// final LayerNorm's weight and bias when they are not folded, then `· W_U + b_U`.
    static func logits(_ model: GPT2Model, _ x: [Float], scale: [Float]) -> [Float] {
        let C = model.config.dModel, V = model.config.dVocab, R = scale.count
        let p = model.parameters
        var mean = [Float](repeating: 0, count: R), ones = [Float](repeating: 1, count: R)
        var normalized = [Float](repeating: 0, count: R * C)
        x.withUnsafeBufferPointer { xp in
            layerNormStats(mean: &mean, scale: &ones, rawScale: nil, x: xp.baseAddress!, N: R, C: C, mode: .fixed(1), rawEps: 0)
            layerNormApply(out: &normalized, x: xp.baseAddress!, mean: mean, scale: scale, w: p.lnF?.w, b: p.lnF?.b, N: R, C: C)
        }
        var z = [Float](repeating: 0, count: R * V)
        unembedForward(logits: &z, x: normalized, wU: p.wU, bU: p.bU, R: R, C: C, V: V)
        return z
    }

    /// Per row of `z (R, V)`: its largest value, its log-normaliser and the exponentials
    /// `exp(z − max)` it sums.
    struct RowStats { var maxima: [Float]; var logNormalizer: [Double]; var exps: [Float] }

    static func rowStats(_ z: [Float], rows R: Int, V: Int) -> RowStats {
        var maxima = [Float](repeating: 0, count: R), lse = [Double](repeating: 0, count: R)
        var exps = [Float](repeating: 0, count: R * V)
        z.withUnsafeBufferPointer { zp in
            let zb = UnsafeSendable(zp.baseAddress!)
            exps.withUnsafeMutableBufferPointer { e in
                let eb = UnsafeSendable(e.baseAddress!)
                lse.withUnsafeMutableBufferPointer { l in
                    let lb = UnsafeSendable(l.baseAddress!)
                    maxima.withUnsafeMutableBufferPointer { mx in
                        let mb = UnsafeSendable(mx.baseAddress!)
                        parallelChunks(R, minimum: 2) { lo, hi in
                            for r in lo..<hi {
                                let row = zb.value + r * V
                                let m = maxFloats(row, count: V)
                                mb.value[r] = m
                                lb.value[r] = Double(m) + log(expShifted(out: eb.value + r * V, x: row, shift: m, count: V))
                            }
                        }
                    }
                }
            }
        }
        return RowStats(maxima: maxima, logNormalizer: lse, exps: exps)
    }

    /// The means over the rows of `z`'s target probability, rank, top-1 and KL(final ‖ z).
    static func compare(_ z: [Float], final: [Float], finalStats: RowStats, targets: [Int], V: Int) -> Measure {
        let R = targets.count
        let stats = rowStats(z, rows: R, V: V)
        var perRow = [Measure](repeating: Measure(), count: R)
        perRow.withUnsafeMutableBufferPointer { out in
            let ob = UnsafeSendable(out.baseAddress!)
            z.withUnsafeBufferPointer { zp in
                final.withUnsafeBufferPointer { fp in
                    let (zb, fb) = (UnsafeSendable(zp.baseAddress!), UnsafeSendable(fp.baseAddress!))
                    parallelChunks(R, minimum: 2) { lo, hi in
                        for r in lo..<hi {
                            ob.value[r] = rowMeasure(z: zb.value + r * V, final: fb.value + r * V, r: r, target: targets[r],
                                                     stats: stats, finalStats: finalStats, V: V)
                        }
                    }
                }
            }
        }
        let n = Double(R)
        return Measure(prob: perRow.reduce(0) { $0 + $1.prob } / n, rank: perRow.reduce(0) { $0 + $1.rank } / n,
                       top1: perRow.reduce(0) { $0 + $1.top1 } / n, kl: perRow.reduce(0) { $0 + $1.kl } / n)
    }

    /// One row's measure. KL(p ‖ q) = Σ p (z_p − z_q) − lse_p + lse_q with p = exp(z_p − max_p)
    /// · exp(max_p − lse_p); the sum runs in Float over blocks of 512, then in Double.
    static func rowMeasure(z: UnsafePointer<Float>, final: UnsafePointer<Float>, r: Int, target t: Int, stats: RowStats,
                           finalStats: RowStats, V: Int) -> Measure {
        let zt = z[t]
        var above = 0
        for v in 0..<V where z[v] > zt { above += 1 }
        var weighted = 0.0, block: Float = 0
        let e = finalStats.exps
        e.withUnsafeBufferPointer { ep in
            let row = ep.baseAddress! + r * V
            for v in 0..<V {
                block += row[v] * (final[v] - z[v])
                if v & 511 == 511 { weighted += Double(block); block = 0 }
            }
        }
        weighted += Double(block)
        let lseP = finalStats.logNormalizer[r], lseQ = stats.logNormalizer[r]
        let kl = weighted * exp(Double(finalStats.maxima[r]) - lseP) - lseP + lseQ
        return Measure(prob: exp(Double(zt) - lseQ), rank: Double(above + 1), top1: above == 0 ? 1 : 0, kl: max(0, kl))
    }

    /// Rows `rows` of `x (N, C)`.
    static func gather(_ x: [Float], rows: [Int], C: Int) -> [Float] {
        rows.flatMap { x[$0 * C ..< ($0 + 1) * C] }
    }

    /// Bytes of the cached residuals of one sequence of T tokens.
    public static func cacheBytes(T: Int, config cfg: GPT2Config, inclMid: Bool) -> Int {
        ((inclMid ? 2 : 1) * cfg.nLayers + 2) * T * cfg.dModel * MemoryLayout<Float>.stride
    }
}
