import Foundation
import TensorCore

/// One activation patch: in the run of prompt `prompt` of a base pass, the activation of one site
/// replaced by the donor pass's value there (TransformerLens `patching.py` semantics).
public struct ActivationPatch: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// The residual stream or a block's output at `position` (nil: every position).
        case residPre, residMid, attnOut, mlpOut
        /// Head `head`'s query, key, value or output at `position` (nil: every position).
        case q, k, v, z
        /// Head `head`'s attention pattern at destination `position` (nil: every destination).
        case pattern
    }
    public var prompt: Int
    public var layer: Int
    public var kind: Kind
    public var position: Int?
    public var head: Int?

    public init(prompt: Int, layer: Int, kind: Kind, position: Int? = nil, head: Int? = nil) {
        self.prompt = prompt
        self.layer = layer
        self.kind = kind
        self.position = position
        self.head = head
    }
}

extension GPT2Model {
    /// Rows of patched residual stream run together: about 512 MiB of working memory (a row holds
    /// about 16·d_model + 3·d_mlp floats on its way through a block), at most 8192 — 6,200 rows
    /// for GPT-2 small, 3,000 for GPT-2 XL, whose 6.2 GB of weights leave less room.
    var patchRowBudget: Int {
        let bytesPerRow = 4 * (16 * config.dModel + 3 * config.dMLP)
        return min(8192, max(256, (512 << 20) / bytesPerRow))
    }

    /// Runs every patch and returns, per patch, the final LayerNorm's output at the last position
    /// (C floats: the logits are it · W_Uᵀ + b_U). `base` and `donor` are retained passes of the
    /// same shape (the two runs of each prompt, e.g. corrupted and clean).
    ///
    /// Causality makes it cheap: a patch at (layer l, position p) changes nothing before layer l
    /// or before position p. So a patch enters where its change does — for a block output or a head,
    /// the changed rows of layer l only (a head's change is added to attn_out through its W_O
    /// rows, and the MLP recomputed for those rows); for resid_pre, layer l itself — and from
    /// there only positions ≥ p are recomputed, attending to the base pass's keys and values for
    /// the positions before p. Patches run together as rows of one batch, joining at the layer
    /// where they enter.
    public func patchedFinal(base: ForwardPass, donor: ForwardPass, patches: [ActivationPatch],
                             maxRows: Int? = nil, profile: PhaseTimes? = nil) throws(GPT2Error) -> [[Float]] {
        let maxRows = maxRows ?? patchRowBudget
        guard base.retained, donor.retained else { throw .backwardNeedsRetainedPass }
        guard base.B == donor.B, base.T == donor.T else { throw .unequalLengths(first: base.T, other: donor.T, index: 0) }
        let T = base.T, L = config.nLayers
        for p in patches {
            guard p.layer >= 0 && p.layer < L else { throw .layerOutOfRange("patch layer \(p.layer)", nLayers: L) }
            if let pos = p.position, pos < 0 || pos >= T { throw .positionOutOfRange(hook: "patch", position: pos, length: T) }
            if let h = p.head, h < 0 || h >= config.nHeads { throw .headOutOfRange(hook: "patch", head: h, nHeads: config.nHeads) }
            guard p.prompt >= 0 && p.prompt < base.B else { throw .positionOutOfRange(hook: "patch prompt", position: p.prompt, length: base.B) }
        }
        // Before the first position where a prompt's two runs differ, every activation of the two
        // is the same (causality): a patch there changes nothing, and a patch of every position
        // changes only the positions from there on.
        let firstDifference = (0..<base.B).map { b in (0..<T).first { base.tokens[b][$0] != donor.tokens[b][$0] } ?? T }
        let baseFinal = finalAtLastPosition(base)
        var results = [[Float]](repeating: [], count: patches.count)
        var work: [(index: Int, patch: ActivationPatch, positions: [Int])] = []
        for (j, p) in patches.enumerated() {
            let positions = (p.position.map { [$0] } ?? Array(0..<T)).filter { $0 >= firstDifference[p.prompt] }
            if positions.isEmpty { results[j] = baseFinal[p.prompt] } else { work.append((j, p, positions)) }
        }
        // Each patch's residual stream from where it enters, chunked to bound the batch.
        var chunk: [(index: Int, patch: ActivationPatch, positions: [Int])] = [], rows = 0
        func flush() throws(GPT2Error) {
            guard !chunk.isEmpty else { return }
            profile?.start()
            let entered = enter(chunk.map { ($0.patch, $0.positions) }, base: base, donor: donor)
            profile?.lap("patch entry")
            let finals = try continueForward(entered, base: base, profile: profile)
            for (i, item) in chunk.enumerated() { results[item.index] = finals[i] }
            chunk = []
            rows = 0
        }
        for item in work {
            let r = T - item.positions.min()!
            if rows + r > maxRows { try flush() }
            chunk.append(item)
            rows += r
        }
        try flush()
        return results
    }

    /// The final LayerNorm's output at each prompt's last position, computed the way patched runs
    /// are (their baseline).
    public func finalAtLastPosition(_ pass: ForwardPass) -> [[Float]] {
        let C = config.dModel
        return (0..<pass.B).map { b in Array(UnsafeBufferPointer(start: pass.lnF.out + (b * pass.T + pass.T - 1) * C, count: C)) }
    }

    /// A patch's residual stream at the first layer it must recompute: rows `start..<T` of
    /// `resid_pre` of block `layer` (layer L: the final residual stream).
    struct Entered {
        var prompt: Int
        var layer: Int
        var start: Int
        var resid: [Float]   // (T − start, C)
    }

    /// Every patch's residual stream where it enters: block outputs and heads change resid_mid
    /// or resid_post of their block at some rows; the MLPs those changes go through run batched
    /// per layer.
    /// `positions` are the positions each patch writes (where its two runs differ).
    func enter(_ patches: [(ActivationPatch, [Int])], base: ForwardPass, donor: ForwardPass) -> [Entered] {
        let T = base.T, C = config.dModel
        var entered: [Entered] = []
        // resid_mid rows waiting for their block's MLP: (patch, position, row values).
        var pending: [Int: [(patch: Int, position: Int, mid: [Float])]] = [:]
        for (j, (p, positions)) in patches.enumerated() {
            let l = p.layer, b = p.prompt
            let a = base.block(l), d = donor.block(l)
            func row(_ buffer: FloatPointer, _ t: Int) -> UnsafeMutablePointer<Float> { buffer + (b * T + t) * C }
            let start = positions.min()!
            if p.kind == .residPre {
                var resid = [Float](UnsafeBufferPointer(start: row(a.residPre, start), count: (T - start) * C))
                for t in positions { for c in 0..<C { resid[(t - start) * C + c] = row(d.residPre, t)[c] } }
                entered.append(Entered(prompt: b, layer: l, start: start, resid: resid))
                continue
            }
            var post = [Float](UnsafeBufferPointer(start: row(a.residPost, start), count: (T - start) * C))
            switch p.kind {
            case .mlpOut:
                for t in positions { for c in 0..<C { post[(t - start) * C + c] = row(a.residMid, t)[c] + row(d.mlpOut, t)[c] } }
            case .residMid:
                for t in positions { pending[l, default: []].append((j, t, Array(UnsafeBufferPointer(start: row(d.residMid, t), count: C)))) }
            case .attnOut:
                for t in positions {
                    pending[l, default: []].append((j, t, (0..<C).map { row(a.residMid, t)[$0] - row(a.attnOut, t)[$0] + row(d.attnOut, t)[$0] }))
                }
            default:
                // attn_out changes by Δz_h · W_O[h] at the rows the head's change reaches.
                let (rows, dz) = headChange(p, positions: positions, base: base, donor: donor)
                let dh = config.dHead, h = p.head!
                var delta = [Float](repeating: 0, count: rows.count * C)
                sgemm(M: rows.count, N: C, K: dh, A: dz, lda: dh, B: parameters.blocks[l].wO + h * dh * C, ldb: C, C: &delta, ldc: C)
                for (i, t) in rows.enumerated() {
                    pending[l, default: []].append((j, t, (0..<C).map { row(a.residMid, t)[$0] + delta[i * C + $0] }))
                }
            }
            entered.append(Entered(prompt: b, layer: l + 1, start: start, resid: post))
        }
        for (l, items) in pending {
            let out = mlpRows(items.flatMap(\.mid), rows: items.count, layer: l, plan: base.plan.blocks[l], rawEps: base.plan.rawEps)
            for (i, item) in items.enumerated() {
                let start = entered[item.patch].start
                for c in 0..<C { entered[item.patch].resid[(item.position - start) * C + c] = out[i * C + c] }
            }
        }
        return entered
    }

    /// The rows of head `p.head`'s output that a q, k, v, z or pattern patch changes, and the change
    /// Δz (rows × dh) of that head there.
    func headChange(_ p: ActivationPatch, positions: [Int], base: ForwardPass, donor: ForwardPass) -> (rows: [Int], dz: [Float]) {
        let T = base.T, C = config.dModel, dh = config.dHead, NH = config.nHeads
        let b = p.prompt, h = p.head!, l = p.layer
        let a = base.block(l), d = donor.block(l)
        let qkv = a.qkv + b * T * 3 * C, donorQKV = d.qkv + b * T * 3 * C
        let pattern = a.att + (b * NH + h) * T * T, donorPattern = d.att + (b * NH + h) * T * T
        func vec(_ base: FloatPointer, _ t: Int, part: Int) -> FloatPointer { base + t * 3 * C + part * C + h * dh }
        let zBase = { (t: Int) in a.z + (b * T + t) * C + h * dh }
        let alpha = attentionScale(layer: l)
        var rows: [Int]
        switch p.kind {
        case .z, .q, .pattern: rows = positions
        default: rows = Array(positions.min()!..<T)  // k, v: every query at or after the first changed key
        }
        var dz = [Float](repeating: 0, count: rows.count * dh)
        // The z a row gets from attention weights `weights` (T) over values with donor rows `donorRows`.
        func z(_ weights: [Float], donorValues: Set<Int>, into i: Int) {
            for s in 0..<T where weights[s] != 0 {
                let v = donorValues.contains(s) ? vec(donorQKV, s, part: 2) : vec(qkv, s, part: 2)
                for e in 0..<dh { dz[i * dh + e] += weights[s] * v[e] }
            }
            for e in 0..<dh { dz[i * dh + e] -= zBase(rows[i])[e] }
        }
        // Attention weights of query row t with the query, or the keys at `donorKeys`, from the donor.
        func weights(row t: Int, donorQuery: Bool, donorKeys: Set<Int>) -> [Float] {
            let q = donorQuery ? vec(donorQKV, t, part: 0) : vec(qkv, t, part: 0)
            var w = [Float](repeating: 0, count: T)
            var m = -Float.infinity
            for s in 0...t {
                let k = donorKeys.contains(s) ? vec(donorQKV, s, part: 1) : vec(qkv, s, part: 1)
                var dot: Float = 0
                for e in 0..<dh { dot += q[e] * k[e] }
                w[s] = alpha * dot
                m = max(m, w[s])
            }
            var sum: Float = 0
            for s in 0...t { w[s] = expf(w[s] - m); sum += w[s] }
            for s in 0...t { w[s] /= sum }
            return w
        }
        let patched = Set(positions)
        for (i, t) in rows.enumerated() {
            switch p.kind {
            case .z:
                for e in 0..<dh { dz[i * dh + e] = (d.z + (b * T + t) * C + h * dh)[e] - zBase(t)[e] }
            case .v:
                z(Array(UnsafeBufferPointer(start: pattern + t * T, count: T)), donorValues: patched, into: i)
            case .pattern:
                z(Array(UnsafeBufferPointer(start: donorPattern + t * T, count: T)), donorValues: [], into: i)
            case .q:
                z(weights(row: t, donorQuery: true, donorKeys: []), donorValues: [], into: i)
            case .k:
                z(weights(row: t, donorQuery: false, donorKeys: patched), donorValues: [], into: i)
            default:
                break
            }
        }
        return (rows, dz)
    }

    /// resid_post of block `l` for rows of resid_mid (rows × C): ln_2, the MLP, the residual add.
    func mlpRows(_ mid: [Float], rows R: Int, layer l: Int, plan: LayerNormPlan.Block, rawEps: Float) -> [Float] {
        guard R > 0 else { return [] }
        let C = config.dModel, M = config.dMLP, w = parameters.blocks[l]
        var mean = [Float](repeating: 0, count: R), scale = mean, raw = mean
        var normalized = [Float](repeating: 0, count: R * C), pre = [Float](repeating: 0, count: R * M)
        var post = pre, out = [Float](repeating: 0, count: R * C)
        layerNormStats(mean: &mean, scale: &scale, rawScale: &raw, x: mid, N: R, C: C, mode: plan.ln2, rawEps: rawEps)
        layerNormApply(out: &normalized, x: mid, mean: mean, scale: scale, w: lnFolded ? nil : w.ln2W, b: lnFolded ? nil : w.ln2B,
                       N: R, C: C)
        matmulForward(out: &pre, inp: normalized, w: w.wIn, bias: w.bIn, N: R, IC: C, OC: M)
        geluForward(out: &post, inp: pre, n: R * M)
        matmulForward(out: &out, inp: post, w: w.wOut, bias: w.bOut, N: R, IC: M, OC: C)
        for i in 0..<(R * C) { out[i] += mid[i] }
        return out
    }

    /// Runs the entered patches to the end, joining each at its layer, and returns the final
    /// LayerNorm's output at the last position of each.
    func continueForward(_ entered: [Entered], base: ForwardPass, profile p: PhaseTimes? = nil) throws(GPT2Error) -> [[Float]] {
        let T = base.T, C = config.dModel, M = config.dMLP, NH = config.nHeads, dh = config.dHead, L = config.nLayers
        let totalRows = entered.reduce(0) { $0 + (T - $1.start) }
        // Row offset of each patch in the batch (fixed: a patch's rows keep their place).
        var offsets: [Int] = []
        var o = 0
        for e in entered { offsets.append(o); o += T - e.start }
        let arena = try allocate(Arena.footprint([totalRows * C, 3 * totalRows, totalRows * C, 3 * totalRows * C,
                                                     totalRows * C, totalRows * C, totalRows * C, totalRows * C,
                                                     3 * totalRows, totalRows * M, totalRows * M, totalRows * C, T * T]), nil)
        let resid = arena.take(totalRows * C)
        let stats = arena.take(3 * totalRows)
        let ln = arena.take(totalRows * C), qkv = arena.take(3 * totalRows * C), z = arena.take(totalRows * C)
        let attnOut = arena.take(totalRows * C), mid = arena.take(totalRows * C), ln2 = arena.take(totalRows * C)
        let stats2 = arena.take(3 * totalRows)
        let pre = arena.take(totalRows * M), post = arena.take(totalRows * M), mlpOut = arena.take(totalRows * C)
        let scores = arena.take(T * T)
        for (i, e) in entered.enumerated() {
            e.resid.withUnsafeBufferPointer { (resid + offsets[i] * C).update(from: $0.baseAddress!, count: e.resid.count) }
        }
        let firstLayer = entered.map(\.layer).min() ?? L
        for l in firstLayer..<L {
            // Patches that have entered by now: their rows run through block l.
            let active = entered.indices.filter { entered[$0].layer <= l }
            guard !active.isEmpty else { continue }
            // Active rows are contiguous runs; run the row-wise ops per run of consecutive patches.
            let w = parameters.blocks[l], lns = base.plan.blocks[l], a = base.block(l)
            for run in contiguousRuns(active, offsets: offsets, entered: entered, T: T) {
                let R = run.rows, r0 = run.first
                let x = resid + r0 * C
                layerNormStats(mean: stats + r0, scale: stats + totalRows + r0, rawScale: stats + 2 * totalRows + r0, x: x,
                               N: R, C: C, mode: lns.ln1, rawEps: base.plan.rawEps)
                layerNormApply(out: ln + r0 * C, x: x, mean: stats + r0, scale: stats + totalRows + r0,
                               w: lnFolded ? nil : w.ln1W, b: lnFolded ? nil : w.ln1B, N: R, C: C)
                matmulForward(out: qkv + r0 * 3 * C, inp: ln + r0 * C, w: w.wQKV, bias: w.bQKV, N: R, IC: C, OC: 3 * C)
            }
            p?.lap("ln1 + qkv")
            let alpha = attentionScale(layer: l)
            for i in active {
                let e = entered[i], p = e.start, rows = T - p, r0 = offsets[i]
                let baseQKV = a.qkv + e.prompt * T * 3 * C
                for h in 0..<NH {
                    let q = qkv + r0 * 3 * C + h * dh
                    // Scores of this patch's query rows against every key: the base's before p, its own after.
                    if p > 0 {
                        sgemm(transB: true, M: rows, N: p, K: dh, alpha: alpha, A: q, lda: 3 * C, B: baseQKV + C + h * dh,
                              ldb: 3 * C, C: scores, ldc: T)
                    }
                    sgemm(transB: true, M: rows, N: rows, K: dh, alpha: alpha, A: q, lda: 3 * C, B: qkv + r0 * 3 * C + C + h * dh,
                          ldb: 3 * C, C: scores + p, ldc: T)
                    for i in 0..<rows { for j in (p + i + 1)..<max(T, p + i + 1) { scores[i * T + j] = -.infinity } }
                    softmaxForward(out: scores, x: scores, rows: rows, cols: T)
                    if p > 0 {
                        sgemm(M: rows, N: dh, K: p, A: scores, lda: T, B: baseQKV + 2 * C + h * dh, ldb: 3 * C,
                              C: z + r0 * C + h * dh, ldc: C)
                    }
                    sgemm(M: rows, N: dh, K: rows, A: scores + p, lda: T, B: qkv + r0 * 3 * C + 2 * C + h * dh, ldb: 3 * C,
                          beta: p > 0 ? 1 : 0, C: z + r0 * C + h * dh, ldc: C)
                }
            }
            p?.lap("attention")
            for run in contiguousRuns(active, offsets: offsets, entered: entered, T: T) {
                let R = run.rows, r0 = run.first
                matmulForward(out: attnOut + r0 * C, inp: z + r0 * C, w: w.wO, bias: w.bO, N: R, IC: C, OC: C)
                residualForward(out: mid + r0 * C, a: resid + r0 * C, b: attnOut + r0 * C, n: R * C)
                layerNormStats(mean: stats2 + r0, scale: stats2 + totalRows + r0, rawScale: stats2 + 2 * totalRows + r0,
                               x: mid + r0 * C, N: R, C: C, mode: lns.ln2, rawEps: base.plan.rawEps)
                layerNormApply(out: ln2 + r0 * C, x: mid + r0 * C, mean: stats2 + r0, scale: stats2 + totalRows + r0,
                               w: lnFolded ? nil : w.ln2W, b: lnFolded ? nil : w.ln2B, N: R, C: C)
                matmulForward(out: pre + r0 * M, inp: ln2 + r0 * C, w: w.wIn, bias: w.bIn, N: R, IC: C, OC: M)
                geluForward(out: post + r0 * M, inp: pre + r0 * M, n: R * M)
                matmulForward(out: mlpOut + r0 * C, inp: post + r0 * M, w: w.wOut, bias: w.bOut, N: R, IC: M, OC: C)
                residualForward(out: resid + r0 * C, a: mid + r0 * C, b: mlpOut + r0 * C, n: R * C)
            }
            p?.lap("attn out + mlp")
        }
        // The final LayerNorm at each patch's last row.
        let final = base.plan.final
        return entered.indices.map { i in
            let last = resid + (offsets[i] + T - entered[i].start - 1) * C
            var mean: Float = 0, scale: Float = 0, raw: Float = 0
            var out = [Float](repeating: 0, count: C)
            layerNormStats(mean: &mean, scale: &scale, rawScale: &raw, x: last, N: 1, C: C, mode: final, rawEps: base.plan.rawEps)
            layerNormApply(out: &out, x: last, mean: &mean, scale: &scale, w: lnFolded ? nil : parameters.lnFW,
                           b: lnFolded ? nil : parameters.lnFB, N: 1, C: C)
            return out
        }
    }

    /// Maximal runs of consecutive active patches, as (first row, row count).
    private func contiguousRuns(_ active: [Int], offsets: [Int], entered: [Entered], T: Int) -> [(first: Int, rows: Int)] {
        var runs: [(first: Int, rows: Int)] = []
        for i in active {
            let first = offsets[i], rows = T - entered[i].start
            if let last = runs.last, last.first + last.rows == first {
                runs[runs.count - 1].rows += rows
            } else {
                runs.append((first, rows))
            }
        }
        return runs
    }
}
