import Foundation
import GPT2
import TensorCore

/// A kind of patching site (TransformerLens `patching.py`): what is patched, and the axes one
/// patch is indexed by. A head site spans every position (`z`) or one (`z_by_pos`); a pattern
/// site every destination (`pattern`) or one (`pattern_by_pos`, its position the destination).
public enum PatchSite: String, CaseIterable, Sendable, Codable {
    case residPre = "resid_pre", residMid = "resid_mid", attnOut = "attn_out", mlpOut = "mlp_out"
    case z, q, k, v
    case zByPos = "z_by_pos", qByPos = "q_by_pos", kByPos = "k_by_pos", vByPos = "v_by_pos"
    case pattern
    case patternByPos = "pattern_by_pos"

    /// `resid_pre,attn_out,mlp_out,z`.
    public static let defaults: [PatchSite] = [.residPre, .attnOut, .mlpOut, .z]

    public var hasPosition: Bool {
        switch self {
        case .residPre, .residMid, .attnOut, .mlpOut, .zByPos, .qByPos, .kByPos, .vByPos, .patternByPos: true
        case .z, .q, .k, .v, .pattern: false
        }
    }

    /// A residual-stream site (resid_pre, resid_mid): its nodes are the stream itself at a layer
    /// and position, not components added to it, so patching several at once overwrites rather
    /// than adds (a later layer's patch at a position replaces an earlier one's).
    public var isResidualStream: Bool { self == .residPre || self == .residMid }

    public var hasHead: Bool {
        switch self {
        case .residPre, .residMid, .attnOut, .mlpOut: false
        default: true
        }
    }

    /// The hook whose activation the site patches.
    public var point: HookName.Point { target.point }

    var patchKind: ActivationPatch.Kind { target.kind }

    /// The hook and the engine's patch kind of each site (the `_by_pos` sites patch the same hook
    /// at one position).
    private var target: (point: HookName.Point, kind: ActivationPatch.Kind) {
        switch self {
        case .residPre: (.residPre, .residPre)
        case .residMid: (.residMid, .residMid)
        case .attnOut: (.attnOut, .attnOut)
        case .mlpOut: (.mlpOut, .mlpOut)
        case .z, .zByPos: (.z, .z)
        case .q, .qByPos: (.q, .q)
        case .k, .kByPos: (.k, .k)
        case .v, .vByPos: (.v, .v)
        case .pattern, .patternByPos: (.pattern, .pattern)
        }
    }

    /// Parses `resid_pre,z,…`; throws naming the first unknown site.
    public static func parseList(_ text: String) throws(AnalysisError) -> [PatchSite] {
        var sites: [PatchSite] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let site = PatchSite(rawValue: part) else { throw .unknownName(option: "--sites", name: part, known: allCases.map(\.rawValue)) }
            if !sites.contains(site) { sites.append(site) }
        }
        if sites.isEmpty { throw .unknownName(option: "--sites", name: text, known: allCases.map(\.rawValue)) }
        return sites
    }
}

/// Where one patch is: its site kind, layer, and (where the site has them) position and head.
public struct SiteIndex: Hashable, Sendable, Codable {
    public var site: PatchSite
    public var layer: Int
    public var position: Int?
    public var head: Int?

    public init(site: PatchSite, layer: Int, position: Int? = nil, head: Int? = nil) {
        self.site = site
        self.layer = layer
        self.position = position
        self.head = head
    }

    /// Every index of `site` in a model with `nLayers` × `nHeads` on prompts of `T` tokens, in
    /// TransformerLens's order (layer, then position or head, then head or destination).
    public static func all(_ site: PatchSite, nLayers: Int, nHeads: Int, T: Int) -> [SiteIndex] {
        var out: [SiteIndex] = []
        for l in 0..<nLayers {
            switch (site.hasPosition, site.hasHead) {
            case (true, false): for p in 0..<T { out.append(SiteIndex(site: site, layer: l, position: p)) }
            case (false, true): for h in 0..<nHeads { out.append(SiteIndex(site: site, layer: l, head: h)) }
            case (true, true):
                if site == .patternByPos {
                    for h in 0..<nHeads { for p in 0..<T { out.append(SiteIndex(site: site, layer: l, position: p, head: h)) } }
                } else {
                    for p in 0..<T { for h in 0..<nHeads { out.append(SiteIndex(site: site, layer: l, position: p, head: h)) } }
                }
            case (false, false): break
            }
        }
        return out
    }
}

/// Which run is patched: the clean activation into the corrupted run (denoising, effect =
/// metric(patched) − metric(corrupt)) or the corrupted one into the clean run (noising, effect =
/// metric(patched) − metric(clean)).
public enum PatchDirection: String, Sendable, Codable, CaseIterable {
    case denoise, noise
}

/// The estimators of a patching run.
public enum PatchMethod: String, Sendable, Codable, CaseIterable {
    /// Parses `activation,atp,…`; throws naming the first unknown method.
    public static func parseList(_ text: String) throws(AnalysisError) -> [PatchMethod] {
        var methods: [PatchMethod] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let m = PatchMethod(rawValue: part.replacingOccurrences(of: "-", with: "_")) else { throw .unknownName(option: "--methods", name: part, known: allCases.map(\.rawValue)) }
            if !methods.contains(m) { methods.append(m) }
        }
        if methods.isEmpty { throw .unknownName(option: "--methods", name: text, known: allCases.map(\.rawValue)) }
        return methods
    }

    /// Activation patching: the exact effect.
    case activation
    /// Attribution patching: `Σ (donor − patched-run activation) · ∂metric/∂activation` on the patched run.
    case atp
    /// AtP* (Kramár et al. 2024): the QK fix for q and k sites, GradDrop over layers; estimates |effect|.
    case atpStar = "atp_star"
}

/// One prompt's patching results: each site index with its exact effect and estimates.
public struct PromptPatching: Sendable {
    public var cleanMetric: Double
    public var corruptMetric: Double
    public var rows: [(index: SiteIndex, activation: Double?, atp: Double?, atpStar: Double?)]
}

/// Activation patching, attribution patching and AtP* of a batch of prompt pairs of equal length
/// (DESIGN.md, "Patching"). The metric is the logit difference answer − wrong at the last position.
///
/// Formulas, with the patched run r (the corrupted run when denoising, the clean run when
/// noising), the donor run d (the other one), a site's activation a and m the metric:
/// - activation: `m(r with a := a_d) − m(r)`;
/// - atp: `Σ (a_d − a_r) · ∂m/∂a |_r`, summed over the activation's feature axis and over the
///   positions and heads the site covers (the paper's code, generalised);
/// - atp_star: for q and k sites the QK fix replaces the linear term: every affected attention row
///   t is recomputed exactly with the donor query (q) or donor key(s) (k), `Σ_t Σ_s (A′_ts − A_ts) ·
///   ∂m/∂A_ts`; then GradDrop: `atp_star = (1/(L−1)) Σ_l |atp_(l)|` where `atp_(l)` is that estimate
///   with the gradient through block l's residual contributions (its attn_out and mlp_out) set to
///   zero. It estimates |effect| (non-negative): its errors are taken against |activation|.
public enum Patching {
    public struct Batch {
        public var clean: [[Int]]
        public var corrupt: [[Int]]
        public var answer: [Int]
        public var wrong: [Int]
        public init(clean: [[Int]], corrupt: [[Int]], answer: [Int], wrong: [Int]) {
            self.clean = clean
            self.corrupt = corrupt
            self.answer = answer
            self.wrong = wrong
        }
    }

    /// Runs the methods over every index of `sites` for each prompt of `batch`.
    ///
    /// `freeze`: both methods on the model linearised around the patched run r (its patterns, GELU's
    /// tangent point, its LayerNorm scales held at r's values, `Freeze`); the donor's activations are
    /// its own run's. r's forward, hence its metric, is unchanged; AtP's gradient is the linearised
    /// model's. With frozen attention q, k and pattern patches change nothing (activation 0) and
    /// their gradients are 0 (atp 0). AtP* is not defined there.
    public static func run(model: GPT2Model, batch: Batch, sites: [PatchSite], methods: Set<PatchMethod>,
                           direction: PatchDirection, freeze: Freeze = []) throws -> [PromptPatching] {
        if !freeze.isEmpty && methods.contains(.atpStar) { throw AnalysisError.freezeWithAtPStar(option: "--freeze") }
        let cfg = model.config, B = batch.clean.count, T = batch.clean[0].count, L = cfg.nLayers
        let indices = sites.flatMap { SiteIndex.all($0, nLayers: L, nHeads: cfg.nHeads, T: T) }
        let patchedTokens = direction == .denoise ? batch.corrupt : batch.clean
        let donorTokens = direction == .denoise ? batch.clean : batch.corrupt
        let needGradients = methods.contains(.atp) || methods.contains(.atpStar)
        // The hooks the estimators read, values on both runs and gradients on the patched run.
        var hooks = Set(sites.map { s in (0..<L).map { HookName(s.point, layer: $0) } }.flatMap { $0 })
        if methods.contains(.atpStar) && sites.contains(where: { [.q, .k, .qByPos, .kByPos].contains($0) }) {
            for l in 0..<L { hooks.insert(HookName(.pattern, layer: l)); hooks.insert(HookName(.q, layer: l)); hooks.insert(HookName(.k, layer: l)) }
        }
        let metric = Metric.logitDifference(answer: batch.answer, wrong: batch.wrong)
        let patched: ForwardPass, grads: [HookName: Tensor]
        if needGradients {
            var backward = BackwardOptions(hookGradients: hooks)
            backward.freeze = freeze
            let (pass, result) = try model.gradients(patchedTokens, metric: metric,
                                                     forward: ForwardOptions(cache: hooks, logits: .last), backward: backward)
            (patched, grads) = (pass, result.hookGradients)
        } else {
            patched = try model.run(patchedTokens, ForwardOptions(logits: .none, retainForBackward: true))
            grads = [:]
        }
        let donor = try model.run(donorTokens, ForwardOptions(cache: hooks, logits: .none, retainForBackward: true))

        // The logit difference of each prompt, from the final LayerNorm's output at the last position.
        let logitDifference = (0..<B).map { LogitDifference(model: model, answer: batch.answer[$0], wrong: batch.wrong[$0]) }
        func metricOf(_ x: [Float], prompt b: Int) -> Double { logitDifference[b](x) }
        let patchedMetric = model.finalAtLastPosition(patched).enumerated().map { metricOf($1, prompt: $0) }
        let donorMetric = model.finalAtLastPosition(donor).enumerated().map { metricOf($1, prompt: $0) }

        var activation: [[Double]] = Array(repeating: [], count: B)
        if methods.contains(.activation) {
            var patches: [ActivationPatch] = []
            for b in 0..<B {
                for i in indices {
                    patches.append(ActivationPatch(prompt: b, layer: i.layer, kind: i.site.patchKind,
                                                   position: i.position, head: i.head))
                }
            }
            let finals = try model.patchedFinal(base: patched, donor: donor, patches: patches, freeze: freeze)
            for (j, p) in patches.enumerated() { activation[p.prompt].append(metricOf(finals[j], prompt: p.prompt) - patchedMetric[p.prompt]) }
        }
        var atp: [[Double]] = Array(repeating: [], count: B), atpStar: [[Double]] = Array(repeating: [], count: B)
        if methods.contains(.atp) {
            atp = (0..<B).map { b in indices.map { linearEstimate($0, prompt: b, patched: patched.cache, donor: donor.cache, grads: grads, T: T) } }
        }
        if methods.contains(.atpStar) {
            var sums = Array(repeating: [Double](repeating: 0, count: indices.count), count: B)
            for l in 0..<L {
                var options = BackwardOptions(hookGradients: hooks)
                options.dropResidualContributions = [l]
                let dropped = try model.backward(patched, metric: metric, options: options).hookGradients
                for b in 0..<B {
                    for (j, i) in indices.enumerated() {
                        let estimate = [.q, .k, .qByPos, .kByPos].contains(i.site)
                            ? qkFix(i, prompt: b, model: model, patched: patched.cache, donor: donor.cache, grads: dropped, T: T)
                            : linearEstimate(i, prompt: b, patched: patched.cache, donor: donor.cache, grads: dropped, T: T)
                        sums[b][j] += abs(estimate)
                    }
                }
            }
            atpStar = sums.map { $0.map { $0 / Double(max(L - 1, 1)) } }
        }
        withExtendedLifetime((patched, donor)) {}
        let clean = direction == .denoise ? donorMetric : patchedMetric
        let corrupt = direction == .denoise ? patchedMetric : donorMetric
        return (0..<B).map { b in
            PromptPatching(cleanMetric: clean[b], corruptMetric: corrupt[b], rows: indices.enumerated().map { j, i in
                (i, activation[b].isEmpty ? nil : activation[b][j], atp[b].isEmpty ? nil : atp[b][j],
                 atpStar[b].isEmpty ? nil : atpStar[b][j])
            })
        }
    }

    /// `Σ (a_donor − a_patched) · grad` over what `index` covers, for prompt `b`. Tensors are the
    /// hooks' TransformerLens shapes with the batch first.
    static func linearEstimate(_ index: SiteIndex, prompt b: Int, patched: [HookName: Tensor], donor: [HookName: Tensor],
                               grads: [HookName: Tensor], T: Int) -> Double {
        let hook = HookName(index.site.point, layer: index.layer)
        let a = patched[hook]!, d = donor[hook]!, g = grads[hook]!
        let base = b * (a.count / a.shape[0])
        var sum = 0.0
        for range in entryRanges(index, shape: a.shape, T: T) {
            for i in range { sum += Double(d.data[base + i] - a.data[base + i]) * Double(g.data[base + i]) }
        }
        return sum
    }

    /// The entries of one prompt's slice of a hook tensor (TransformerLens shape `shape`, batch
    /// first) that `index` covers, as offsets within that slice.
    public static func entryRanges(_ index: SiteIndex, shape: [Int], T: Int) -> [Range<Int>] {
        let positions = index.position.map { [$0] } ?? Array(0..<T)
        switch index.site {
        case .residPre, .residMid, .attnOut, .mlpOut:
            let C = shape[2]
            return [index.position! * C ..< (index.position! + 1) * C]
        case .z, .q, .k, .v, .zByPos, .qByPos, .kByPos, .vByPos:
            // [B, T, NH, dh]
            let NH = shape[2], dh = shape[3]
            return positions.map { t in let s = (t * NH + index.head!) * dh; return s ..< s + dh }
        case .pattern, .patternByPos:
            // [B, NH, T, T]
            return positions.map { t in let s = (index.head! * T + t) * T; return s ..< s + T }
        }
    }

    /// AtP*'s QK fix for a q or k site: the attention rows the patch changes, recomputed exactly
    /// (donor query or donor keys, causal mask, softmax), `Σ (A′ − A) · ∂m/∂A`.
    static func qkFix(_ index: SiteIndex, prompt b: Int, model: GPT2Model, patched: [HookName: Tensor],
                      donor: [HookName: Tensor], grads: [HookName: Tensor], T: Int) -> Double {
        let l = index.layer, h = index.head!
        let q = patched[HookName(.q, layer: l)]!, k = patched[HookName(.k, layer: l)]!
        let dq = donor[HookName(.q, layer: l)]!, dk = donor[HookName(.k, layer: l)]!
        let pattern = patched[HookName(.pattern, layer: l)]!, g = grads[HookName(.pattern, layer: l)]!
        let NH = q.shape[2], dh = q.shape[3]
        let alpha = model.attentionScale(layer: l)
        func start(_ pos: Int) -> Int { ((b * T + pos) * NH + h) * dh }
        let isQuery = index.site == .q || index.site == .qByPos
        let changed = Set(index.position.map { [$0] } ?? Array(0..<T))
        let rows = isQuery ? changed.sorted() : Array((changed.min() ?? 0)..<T)
        var total = 0.0
        q.data.withUnsafeBufferPointer { q in k.data.withUnsafeBufferPointer { k in
            dq.data.withUnsafeBufferPointer { dq in dk.data.withUnsafeBufferPointer { dk in
                for t in rows {
                    let weights = attentionRow(query: (isQuery ? dq : q).baseAddress! + start(t),
                                               keys: { s in (!isQuery && changed.contains(s) ? dk : k).baseAddress! + start(s) },
                                               count: t + 1, dh: dh, alpha: alpha)
                    let row = ((b * NH + h) * T + t) * T
                    for s in 0..<T {
                        let patched = s <= t ? Double(weights[s]) : 0
                        total += (patched - Double(pattern.data[row + s])) * Double(g.data[row + s])
                    }
                }
            } }
        } }
        return total
    }
}
