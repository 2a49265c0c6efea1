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
    /// about 16·d_model + 3·d_mlp floats on its way through a block, and NH·T attention scores),
    /// at most 8192 — 5,300 rows for GPT-2 small on 15 tokens, 2,600 for GPT-2 XL, whose 6.2 GB of
    /// weights leave less room.
    func patchRowBudget(T: Int) -> Int {
        let bytesPerRow = 4 * (16 * config.dModel + 3 * config.dMLP + config.nHeads * T)
        return min(8192, max(256, (512 << 20) / bytesPerRow))
    }

    /// Runs every patch and returns, per patch, the final LayerNorm's output at the last position
    /// (C floats: the logits are it · W_Uᵀ + b_U). `base` and `donor` are retained passes of the
    /// same shape (the two runs of each prompt, e.g. corrupted and clean).
    ///
    /// Causality makes it cheap: a patch at (layer l, position p) changes nothing before layer l
    /// or before position p. So a patch enters where its change does — for a block output or a head,
    /// the changed rows of layer l only (a head's change is added to attn_out through its W_O
    /// rows, and the MLP half of the block run on those rows); for resid_pre, layer l itself — and
    /// from there the forward's own blocks run on positions ≥ p only, attending to the base pass's
    /// keys and values for the positions before p. Patches run together as rows of one batch,
    /// joining at the layer where they enter.
    ///
    /// `freeze`: the patches go into the linearised variant of the model frozen at `base` (its
    /// patterns, GELU's tangent point, its LayerNorm scales, at each row's prompt and position).
    /// With frozen attention a q, k or pattern patch changes nothing: the pattern is `base`'s.
    public func patchedFinal(base: ForwardPass, donor: ForwardPass, patches: [ActivationPatch], freeze: Freeze = [],
                             maxRows: Int? = nil, profile: PhaseTimes? = nil) throws(GPT2Error) -> [[Float]] {
        let maxRows = maxRows ?? patchRowBudget(T: base.T)
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
        let inert: Set<ActivationPatch.Kind> = freeze.contains(.attention) ? [.q, .k, .pattern] : []
        for (j, p) in patches.enumerated() {
            let positions = inert.contains(p.kind) ? []
                : (p.position.map { [$0] } ?? Array(0..<T)).filter { $0 >= firstDifference[p.prompt] }
            if positions.isEmpty { results[j] = baseFinal[p.prompt] } else { work.append((j, p, positions)) }
        }
        // The patched rows have no hooks of their own: the runner only times them.
        var runner = HookRunner(profile: profile)
        // Each patch's residual stream from where it enters, chunked to bound the batch.
        var chunk: [(index: Int, patch: ActivationPatch, positions: [Int])] = [], rows = 0
        func flush() throws(GPT2Error) {
            guard !chunk.isEmpty else { return }
            var (entered, pending) = enter(chunk.map { ($0.patch, $0.positions) }, base: base, donor: donor)
            runner.endPhase("patch entry")
            try runMLPs(pending, into: &entered, base: base, freeze: freeze, &runner)
            let finals = try rowForward(entered, base: base, freeze: freeze, &runner)
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

    /// resid_mid rows of block l waiting for its MLP half, per layer: (patch, position, row values).
    typealias PendingMLP = [Int: [(patch: Int, position: Int, mid: [Float])]]

    /// Every patch's residual stream where it enters: resid_pre patches at their layer; block
    /// outputs and heads at the next layer, as the base's resid_post with the rows they change
    /// — mlp_out's directly, the others' as resid_mid rows still to go through the MLP (`pending`).
    /// `positions` are the positions each patch writes (where its two runs differ).
    func enter(_ patches: [(ActivationPatch, [Int])], base: ForwardPass, donor: ForwardPass) -> ([Entered], PendingMLP) {
        let T = base.T, C = config.dModel
        var entered: [Entered] = []
        var pending: PendingMLP = [:]
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
        return (entered, pending)
    }

    /// Runs the pending resid_mid rows of each layer through that block's MLP half (the forward's
    /// own, on just those rows) and writes the resid_post rows into their patches' streams.
    func runMLPs(_ pending: PendingMLP, into entered: inout [Entered], base: ForwardPass, freeze: Freeze,
                 _ runner: inout HookRunner) throws(GPT2Error) {
        let C = config.dModel, T = base.T
        for (l, items) in pending {
            let pass = try RowPass(N: items.count, scores: 0, splitLN1: false, config: config)
            let a = pass.block(0)
            for (i, item) in items.enumerated() {
                item.mid.withUnsafeBufferPointer { (a.residMid + i * C).update(from: $0.baseAddress!, count: C) }
            }
            let frozen = FrozenValues(parts: freeze, base: base, sourceRows: items.map { entered[$0.patch].prompt * T + $0.position })
            try mlp(l, a, pass.rows(items.count, segments: [], frozen: frozen), base.plan.blocks[l].ln2, rawEps: base.plan.rawEps, &runner)
            for (i, item) in items.enumerated() {
                let start = entered[item.patch].start
                for c in 0..<C { entered[item.patch].resid[(item.position - start) * C + c] = a.residPost[i * C + c] }
            }
        }
    }

    /// The rows of head `p.head`'s output that a q, k, v, z or pattern patch changes, and the change
    /// Δz (rows × dh) of that head there.
    func headChange(_ p: ActivationPatch, positions: [Int], base: ForwardPass, donor: ForwardPass) -> (rows: [Int], dz: [Float]) {
        let T = base.T, C = config.dModel, dh = config.dHead, NH = config.nHeads
        let b = p.prompt, h = p.head!, l = p.layer
        let a = base.block(l), d = donor.block(l)
        let qkv = a.qkv + b * T * 3 * C, donorQKV = d.qkv + b * T * 3 * C
        let pattern = a.att + (b * NH + h) * T * T, donorPattern = d.att + (b * NH + h) * T * T
        func vec(_ base: FloatPointer, _ t: Int, part: Int) -> ConstFloatPointer { ConstFloatPointer(base + t * 3 * C + part * C + h * dh) }
        let zBase = { (t: Int) in a.z + (b * T + t) * C + h * dh }
        let alpha = attentionScale(layer: l)
        var rows: [Int]
        switch p.kind {
        case .z, .q, .pattern: rows = positions
        default: rows = Array(positions.min()!..<T)  // k, v: every query at or after the first changed key
        }
        var dz = [Float](repeating: 0, count: rows.count * dh)
        // The z a row gets from attention weights `weights` over values with donor rows `donorValues`.
        func z(_ weights: [Float], donorValues: Set<Int>, into i: Int) {
            for s in weights.indices where weights[s] != 0 {
                let v = donorValues.contains(s) ? vec(donorQKV, s, part: 2) : vec(qkv, s, part: 2)
                for e in 0..<dh { dz[i * dh + e] += weights[s] * v[e] }
            }
            for e in 0..<dh { dz[i * dh + e] -= zBase(rows[i])[e] }
        }
        // Attention weights of query row t with the query, or the keys at `donorKeys`, from the donor.
        func weights(row t: Int, donorQuery: Bool, donorKeys: Set<Int>) -> [Float] {
            attentionRow(query: donorQuery ? vec(donorQKV, t, part: 0) : vec(qkv, t, part: 0),
                         keys: { s in donorKeys.contains(s) ? vec(donorQKV, s, part: 1) : vec(qkv, s, part: 1) },
                         count: t + 1, dh: dh, alpha: alpha)
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

    /// Runs the entered patches' rows through the blocks from the layer each enters at — the
    /// forward's own `block`, each patch's rows attending to the base pass's keys and values
    /// before its first row — and returns the final LayerNorm's output at each patch's last row.
    func rowForward(_ entered: [Entered], base: ForwardPass, freeze: Freeze, _ runner: inout HookRunner) throws(GPT2Error) -> [[Float]] {
        let T = base.T, C = config.dModel, L = config.nLayers, NH = config.nHeads
        // In the order they enter: the rows a block runs are the batch's first ones.
        let order = entered.indices.sorted { (entered[$0].layer, $0) < (entered[$1].layer, $1) }
        var offsets = [0]
        for i in order { offsets.append(offsets.last! + T - entered[i].start) }
        let N = offsets.last!
        let frozen = FrozenValues(parts: freeze, base: base,
                                  sourceRows: order.flatMap { i in (entered[i].start..<T).map { entered[i].prompt * T + $0 } })
        let pass = try RowPass(N: N, scores: NH * N * T, splitLN1: base.plan.blocks.contains { $0.ln1 != $0.ln1V }, config: config)
        var joined = 0
        func join(upTo layer: Int, into stream: FloatPointer) {
            while joined < order.count && entered[order[joined]].layer <= layer {
                entered[order[joined]].resid.withUnsafeBufferPointer {
                    (stream + offsets[joined] * C).update(from: $0.baseAddress!, count: $0.count)
                }
                joined += 1
            }
            runner.endPhase("patch entry")
        }
        for l in (entered.map(\.layer).min() ?? L)..<L {
            let a = pass.block(l), prefix = base.block(l).qkv
            join(upTo: l, into: a.residPre)
            let segments = AttentionSegment.packed(order.prefix(joined).map { i in
                (T - entered[i].start, entered[i].start, ConstFloatPointer(prefix + entered[i].prompt * T * 3 * C))
            }, NH: NH)
            try block(l, a, pass.rows(offsets[joined], segments: segments, frozen: frozen), base.plan.blocks[l],
                      rawEps: base.plan.rawEps, &runner)
        }
        let final = pass.block(L - 1).residPost
        join(upTo: L, into: final)
        let rows = pass.rows(N, segments: [], frozen: frozen)
        try layerNorm(pass.lnF, input: final, weights: parameters.lnF, scale: base.plan.final, rawEps: base.plan.rawEps,
                      hooks: (HookName(.lnFinalScale), HookName(.lnFinalNormalized)), rows, &runner, frozen: rows.frozenScale { $0.lnF })
        var out = [[Float]](repeating: [], count: entered.count)
        for (j, i) in order.enumerated() {
            out[i] = Array(UnsafeBufferPointer(start: pass.lnF.out + (offsets[j + 1] - 1) * C, count: C))
        }
        return out
    }
}

/// The buffers of a forward over rows of a base pass that keeps no activations: the residual
/// stream's two buffers, one block's buffers reused by every block, the final LayerNorm.
final class RowPass {
    let arena: Arena
    let first: BlockActivations
    let lnF: LayerNormActivations
    let config: GPT2Config

    /// For N rows and `scores` attention scores (Σ NH · rows · keys over the sequences).
    init(N: Int, scores: Int, splitLN1: Bool, config cfg: GPT2Config) throws(GPT2Error) {
        let C = cfg.dModel
        let sizes = [N * C, N * C] + LayerNormActivations.sizes(N: N, C: C)
            + BlockActivations.sizes(N: N, scores: scores, splitLN1: splitLN1, config: cfg)
        arena = try allocate(Arena.footprint(sizes), nil)
        let streamA = arena.take(N * C), streamB = arena.take(N * C)
        lnF = LayerNormActivations(arena, N: N, C: C)
        var b = BlockActivations(arena, N: N, scores: scores, splitLN1: splitLN1, config: cfg, residPre: streamA)
        b.residPost = streamB
        first = b
        config = cfg
    }

    func block(_ l: Int) -> BlockActivations { first.alternating(layer: l) }

    /// The first `n` rows, attention's sequences among them `segments`. The rows have no hooks
    /// (the runner requests none): their layouts take them as one sequence. `frozen`: the
    /// linearised variant's values, its `sourceRows` cut to the first `n` (none when nothing is frozen).
    func rows(_ n: Int, segments: [AttentionSegment], frozen: FrozenValues? = nil) -> Rows {
        let values = frozen.flatMap { f in
            f.parts.isEmpty ? nil : FrozenValues(parts: f.parts, base: f.base, sourceRows: Array(f.sourceRows.prefix(n)))
        }
        return Rows(N: n, segments: segments,
                    layouts: Layouts(B: 1, T: n, C: config.dModel, NH: config.nHeads, dh: config.dHead, M: config.dMLP),
                    frozen: values)
    }
}
