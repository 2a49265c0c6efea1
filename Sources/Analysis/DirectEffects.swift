import Foundation
import GPT2
import TensorCore

/// One position whose next-token logit is attributed: batch row, position, and the direction
/// `u = W_U[:, answer] − W_U[:, wrong]` (or `W_U[:, answer]` without `wrong`).
public struct AttributionTarget: Sendable {
    public var prompt: Int
    public var row: Int
    public var position: Int
    public var answerID: Int
    public var wrongID: Int?

    public init(prompt: Int, row: Int, position: Int, answerID: Int, wrongID: Int?) {
        self.prompt = prompt
        self.row = row
        self.position = position
        self.answerID = answerID
        self.wrongID = wrongID
    }
}

/// DLA and exact direct effect of one component for one prompt.
public struct ComponentAttribution: Sendable, Codable, Equatable {
    public var prompt: Int
    public var component: Component
    public var dla: Double
    public var directEffect: Double

    public init(prompt: Int, component: Component, dla: Double, directEffect: Double) {
        self.prompt = prompt
        self.component = component
        self.dla = dla
        self.directEffect = directEffect
    }

    enum CodingKeys: String, CodingKey {
        case prompt, component, dla
        case directEffect = "direct_effect"
    }
}

/// The output of attributing one batch.
public struct BatchAttribution: Sendable {
    public var rows: [ComponentAttribution]
    /// Largest |Σ components − resid_post| over the batch's targets: the decomposition check.
    public var componentsSumMaxAbsError: Double { perTargetSumError.map(\.error).max() ?? 0 }
    /// The same check per target.
    public var perTargetSumError: [(prompt: Int, error: Double)]
    /// The logit difference answer − wrong of each target that has a wrong answer and is its
    /// sequence's last position (prompt sets): the task metric of the clean run.
    public var logitDifferences: [(prompt: Int, value: Double)] = []
}

/// Direct logit attribution against the exact direct effect (DESIGN.md, "Definitions").
///
/// Components of the final residual stream `r` at a target position: `embed`, `pos_embed`, every
/// head `L{l}H{h}` (`z · W_O`, b_O excluded), each layer's `L{l}_bO` and `L{l}_mlp`.
/// `DLA_c = (c − mean c) / s · u` with `s` the clean run's `ln_final.hook_scale`;
/// `DE_c = f(r) − f(r − c)` with `f(x) = LN_final(x) · u` recomputed (in Double). For an LN-free
/// model both are the same linear function of `c`.
public enum DirectLogitAttribution {
    /// The hooks DLA reads: every component's output and the final LayerNorm's input and scale.
    public static func hooks(nLayers: Int) -> Set<HookName> {
        var hooks: Set<HookName> = [.embed(), .posEmbed(), HookName(.lnFinalScale), .block(nLayers - 1, .residPost)]
        for l in 0..<nLayers { hooks.insert(.block(l, .z)); hooks.insert(.block(l, .mlpOut)) }
        return hooks
    }

    /// Runs `tokens` (equal lengths) once, caching only the hooks DLA reads at the targets'
    /// positions, and attributes every target.
    public static func attribute(model: GPT2Model, tokens: [[Int]], targets: [AttributionTarget]) throws -> BatchAttribution {
        let positions = Array(Set(targets.map(\.position))).sorted()
        let pass = try model.run(tokens, ForwardOptions(cache: hooks(nLayers: model.config.nLayers),
                                                        cachePositions: positions, logits: .none))
        var out = attribute(model: model, cache: pass.cache, positions: positions, targets: targets)
        let finals = model.finalAtLastPosition(pass), last = tokens[0].count - 1
        for t in targets where t.position == last {
            guard let wrong = t.wrongID else { continue }
            out.logitDifferences.append((t.prompt, LogitDifference(model: model, answer: t.answerID, wrong: wrong)(finals[t.row])))
        }
        return out
    }

    /// Attributes every target from a forward cache holding `hooks(nLayers:)` at `positions`.
    public static func attribute(model: GPT2Model, cache: [HookName: Tensor], positions: [Int],
                                 targets: [AttributionTarget]) -> BatchAttribution {
        let cfg = model.config, w = model.parameters
        let C = cfg.dModel, NH = cfg.nHeads, dh = cfg.dHead, P = positions.count
        let scale = model.layerNormScale, rawEps = model.layerNormPlan.rawEps
        var rows: [ComponentAttribution] = []
        rows.reserveCapacity(targets.count * (2 + cfg.nLayers * (NH + 2)))
        var sumErrors: [(prompt: Int, error: Double)] = []
        let slot = Dictionary(uniqueKeysWithValues: positions.enumerated().map { ($1, $0) })
        // Row of target t in a cached [B, P, …] hook.
        let rowsN = targets.map { $0.row * P + slot[$0.position]! }
        func cached(_ h: HookName) -> [Float] { cache[h]!.data }

        // Every head's output at the target rows, one sgemm per head and layer: (targets, NH, C).
        let heads: [[Float]] = (0..<cfg.nLayers).map { l in
            let zAll = cached(.block(l, .z))
            var z = [Float](repeating: 0, count: rowsN.count * C)
            for (i, n) in rowsN.enumerated() { for c in 0..<C { z[i * C + c] = zAll[n * C + c] } }
            var out = [Float](repeating: 0, count: rowsN.count * NH * C)
            headOutputForward(result: &out, z: z, wO: w.blocks[l].wO, N: rowsN.count, C: C, NH: NH)
            return out
        }
        let embed = cached(.embed()), pos = cached(.posEmbed()), resid = cached(.block(cfg.nLayers - 1, .residPost))
        let lnScale = cached(HookName(.lnFinalScale))
        let mlp = (0..<cfg.nLayers).map { cached(.block($0, .mlpOut)) }
        _ = dh

        for (ti, target) in targets.enumerated() {
            let n = rowsN[ti]
            // u, times the final LayerNorm's weight when it is not folded into W_U.
            var u = [Double](repeating: 0, count: C)
            for c in 0..<C {
                var x = Double(w.wU[target.answerID * C + c])
                if let wrong = target.wrongID { x -= Double(w.wU[wrong * C + c]) }
                if !model.lnFolded { x *= Double(w.lnFW[c]) }
                u[c] = x
            }
            let r = (0..<C).map { Double(resid[n * C + $0]) }
            let s = Double(lnScale[n])

            // f(x) = LN_final(x) · u, the LayerNorm recomputed in Double by the forward's own op.
            var normalized = [Double](repeating: 0, count: C)
            func f(_ x: [Double]) -> Double {
                var mean = 0.0, sc = 0.0
                x.withUnsafeBufferPointer { xp in
                    layerNormStats(mean: &mean, scale: &sc, rawScale: nil, x: xp.baseAddress!, N: 1, C: C, mode: scale,
                                   rawEps: rawEps)
                    layerNormApply(out: &normalized, x: xp.baseAddress!, mean: &mean, scale: &sc, w: nil, b: nil, N: 1, C: C)
                }
                var dot = 0.0
                for c in 0..<C { dot += normalized[c] * u[c] }
                return dot
            }
            let fr = f(r)
            var sum = [Double](repeating: 0, count: C)
            var shifted = [Double](repeating: 0, count: C)
            func add(_ component: Component, _ comp: [Double]) {
                let mean = comp.reduce(0, +) / Double(C)
                var dla = 0.0
                for c in 0..<C {
                    dla += (comp[c] - mean) * u[c]
                    shifted[c] = r[c] - comp[c]
                    sum[c] += comp[c]
                }
                dla /= s
                let de = fr - f(shifted)
                rows.append(ComponentAttribution(prompt: target.prompt, component: component, dla: dla, directEffect: de))
            }
            add(.embed, (0..<C).map { Double(embed[n * C + $0]) })
            add(.posEmbed, (0..<C).map { Double(pos[n * C + $0]) })
            for l in 0..<cfg.nLayers {
                for h in 0..<NH {
                    let base = (ti * NH + h) * C
                    add(.head(layer: l, head: h), (0..<C).map { Double(heads[l][base + $0]) })
                }
                add(.bO(layer: l), (0..<C).map { Double(w.blocks[l].bO[$0]) })
                add(.mlp(layer: l), (0..<C).map { Double(mlp[l][n * C + $0]) })
            }
            var worst = 0.0
            for c in 0..<C { worst = max(worst, abs(sum[c] - r[c])) }
            sumErrors.append((target.prompt, worst))
        }
        return BatchAttribution(rows: rows, perTargetSumError: sumErrors)
    }
}

/// NMAE of DLA against the direct effect (`Metrics.nmae`) over heads: all of them, each head,
/// each layer's heads.
public struct NMAESummary: Sendable, Equatable {
    /// Over every (prompt, head) pair, as the paper's code reports it.
    public var headsGlobal: Double
    /// Per head, over prompts.
    public var perHead: [Component: Double]
    /// Per layer, over (prompt, head of that layer).
    public var perLayer: [Int: Double]

    public init(rows: [ComponentAttribution]) {
        struct Sums { var err = 0.0, mag = 0.0, n = 0 }
        var head: [Component: Sums] = [:], layer: [Int: Sums] = [:], all = Sums()
        func add(_ s: inout Sums, _ r: ComponentAttribution) {
            s.err += abs(r.dla - r.directEffect)
            s.mag += abs(r.directEffect)
            s.n += 1
        }
        for r in rows {
            guard let l = r.component.headLayer else { continue }
            add(&head[r.component, default: Sums()], r)
            add(&layer[l, default: Sums()], r)
            add(&all, r)
        }
        func nmae(_ s: Sums) -> Double { Metrics.nmae(sumAbsError: s.err, sumAbsExact: s.mag, count: s.n) }
        headsGlobal = nmae(all)
        perHead = head.mapValues(nmae)
        perLayer = layer.mapValues(nmae)
    }
}

/// Bootstrap confidence intervals of the head NMAE: over every (prompt, head) pair, per layer
/// over that layer's pairs (the paper's per-layer figure), and per head over its prompts.
/// `crossed` (default) resamples the set's heads and its prompts independently
/// (`Metrics.bootstrapNMAECrossed`, heads in (layer, head) order, prompts ascending), as the
/// paper's `run_analysis.py` does; `pairs` resamples (prompt, head) pairs taken in (prompt,
/// component) order (`Metrics.bootstrapNMAE`). Each set has its own generator from `seed`, so
/// the same rows give the same intervals whatever their order.
public struct NMAEIntervals: Sendable, Equatable {
    public var headsGlobal: ConfidenceInterval
    /// Per layer.
    public var perLayer: [Int: ConfidenceInterval]
    /// Per head.
    public var perHead: [Component: ConfidenceInterval]

    /// Intervals read back from where they were stored.
    public init(headsGlobal: ConfidenceInterval, perLayer: [Int: ConfidenceInterval],
                perHead: [Component: ConfidenceInterval] = [:]) {
        self.headsGlobal = headsGlobal
        self.perLayer = perLayer
        self.perHead = perHead
    }

    public init(rows: [ComponentAttribution], scheme: BootstrapScheme = .crossed, resamples: Int = Metrics.bootstrapResamples,
                seed: UInt64 = Metrics.bootstrapSeed, level: Double = 0.95) {
        let heads = rows.compactMap { r -> (prompt: Int, component: Component, row: ComponentAttribution)? in
            r.component.headLayer == nil ? nil : (r.prompt, r.component, r)
        }.sorted { ($0.prompt, $0.component) < ($1.prompt, $1.component) }
        let prompts = Array(Set(heads.map(\.prompt))).sorted()
        let promptSlot = Dictionary(uniqueKeysWithValues: prompts.enumerated().map { ($1, $0) })
        func interval(_ pairs: [(prompt: Int, component: Component, row: ComponentAttribution)]) -> ConfidenceInterval {
            switch scheme {
            case .pairs:
                return Metrics.bootstrapNMAE(pairs.map(\.row.dla), pairs.map(\.row.directEffect), resamples: resamples, seed: seed,
                                             level: level)
            case .crossed:
                let members = Array(Set(pairs.map(\.component))).sorted()
                let slot = Dictionary(uniqueKeysWithValues: members.enumerated().map { ($1, $0) })
                var absError = [Double](repeating: 0, count: members.count * prompts.count), absExact = absError
                for p in pairs {
                    let cell = slot[p.component]! * prompts.count + promptSlot[p.prompt]!
                    absError[cell] = abs(p.row.dla - p.row.directEffect)
                    absExact[cell] = abs(p.row.directEffect)
                }
                // Only the prompts this set has: every prompt of a run has every head.
                let used = Set(pairs.map(\.prompt))
                let columns = prompts.indices.filter { used.contains(prompts[$0]) }
                if columns.count < prompts.count {
                    func keep(_ m: [Double]) -> [Double] { members.indices.flatMap { i in columns.map { m[i * prompts.count + $0] } } }
                    absError = keep(absError)
                    absExact = keep(absExact)
                }
                return Metrics.bootstrapNMAECrossed(absError: absError, absExact: absExact, rows: members.count,
                                                    prompts: columns.count, resamples: resamples, seed: seed, level: level)
            }
        }
        headsGlobal = interval(heads)
        perLayer = Dictionary(grouping: heads, by: { $0.component.headLayer! })
            .mapValues(interval)
        perHead = Dictionary(grouping: heads, by: \.component).mapValues(interval)
    }
}

/// One head's DLA and direct effect averaged over prompts: what "the heads with the largest
/// direct effects" lists (`lnlens dla`, `query top-heads`, `report`).
public struct HeadEffect: Sendable, Codable, Equatable {
    public var layer: Int
    public var head: Int
    /// Mean |direct effect| over prompts: the ranking key.
    public var meanAbsDE: Double
    public var meanDE: Double
    public var meanDLA: Double
    /// NMAE (%) of DLA against DE over this head's prompts.
    public var nmae: Double
    public var prompts: Int

    public var component: Component { .head(layer: layer, head: head) }

    /// Every head of `rows`, largest mean |direct effect| first (ties: by layer, then head).
    public static func ranked(_ rows: [ComponentAttribution]) -> [HeadEffect] {
        var byHead: [Component: [ComponentAttribution]] = [:]
        for r in rows where r.component.headLayer != nil { byHead[r.component, default: []].append(r) }
        return byHead.map { c, rows in
            guard case let .head(l, h) = c else { fatalError("heads only") }
            let n = Double(rows.count)
            return HeadEffect(layer: l, head: h, meanAbsDE: rows.reduce(0) { $0 + abs($1.directEffect) } / n,
                              meanDE: rows.reduce(0) { $0 + $1.directEffect } / n, meanDLA: rows.reduce(0) { $0 + $1.dla } / n,
                              nmae: Metrics.nmae(rows.map(\.dla), rows.map(\.directEffect)), prompts: rows.count)
        }.sorted { $0.meanAbsDE != $1.meanAbsDE ? $0.meanAbsDE > $1.meanAbsDE : ($0.layer, $0.head) < ($1.layer, $1.head) }
    }
}
