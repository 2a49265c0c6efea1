import Foundation
import TensorCore

/// The graph edge attribution scores (hannamw/EAP-IG's `Graph`, in its names and order).
///
/// Upstream (forward) nodes: `input` (`hook_embed`), each head `a{l}.h{h}` (its
/// `attn.hook_result`), each MLP `m{l}` (`hook_mlp_out`), in the order the forward computes them.
/// Downstream (backward) nodes, per layer: every head's q input, then every head's k, then v
/// (`a{l}.h{h}<q>`: the copy of `resid_pre` head h's queries read), the MLP's input (`m{l}`,
/// `hook_mlp_in`); last `logits` (the final `resid_post`). An edge u → v exists when u is written
/// before v reads the stream: a head reads the nodes of earlier layers and the input, an MLP also
/// its own layer's heads, the logits everything.
public struct EdgeGraph: Sendable, Equatable {
    public enum Node: Hashable, Sendable {
        case input
        case head(layer: Int, head: Int)
        case mlp(layer: Int)
        case logits

        public var name: String {
            switch self {
            case .input: "input"
            case let .head(l, h): "a\(l).h\(h)"
            case let .mlp(l): "m\(l)"
            case .logits: "logits"
            }
        }
    }

    /// Which input of a head an edge enters (nil for an MLP's or the logits').
    public enum HeadInput: String, CaseIterable, Sendable { case q, k, v }

    public struct Downstream: Hashable, Sendable {
        public let node: Node
        public let input: HeadInput?
        public var name: String { input.map { "\(node.name)<\($0.rawValue)>" } ?? node.name }
    }

    public let nLayers: Int, nHeads: Int
    public let upstream: [Node]
    public let downstream: [Downstream]

    public init(nLayers: Int, nHeads: Int) {
        self.nLayers = nLayers
        self.nHeads = nHeads
        var up: [Node] = [.input], down: [Downstream] = []
        for l in 0..<nLayers {
            up += (0..<nHeads).map { .head(layer: l, head: $0) } + [.mlp(layer: l)]
            for input in HeadInput.allCases {
                down += (0..<nHeads).map { Downstream(node: .head(layer: l, head: $0), input: input) }
            }
            down.append(Downstream(node: .mlp(layer: l), input: nil))
        }
        down.append(Downstream(node: .logits, input: nil))
        upstream = up
        downstream = down
    }

    /// How many upstream nodes (a prefix of `upstream`) write into downstream node `v`.
    public func upstreamCount(of v: Int) -> Int {
        switch downstream[v].node {
        case let .head(l, _): 1 + l * (nHeads + 1)
        case let .mlp(l): 1 + l * (nHeads + 1) + nHeads
        case .logits, .input: upstream.count
        }
    }

    public func isEdge(_ u: Int, _ v: Int) -> Bool { u < upstreamCount(of: v) }
    public var edgeCount: Int { downstream.indices.reduce(0) { $0 + upstreamCount(of: $1) } }
}

/// The first position where two prompts of equal length differ (their length when none does):
/// before it both runs compute the same values (causal attention).
func firstDifference(_ a: [Int], _ b: [Int]) -> Int {
    a.indices.first { $0 >= b.count || a[$0] != b[$0] } ?? a.count
}

/// A score per edge: `values[u · downstream.count + v]`, NaN where u → v is no edge.
public struct EdgeScores: Sendable {
    public let graph: EdgeGraph
    public var values: [Float]
    public subscript(u: Int, v: Int) -> Float { values[u * graph.downstream.count + v] }

    /// Scores read back from a store: `values` in the layout above (NaN for non-edges and edges
    /// without a score).
    public init(graph: EdgeGraph, values: [Float]) {
        precondition(values.count == graph.upstream.count * graph.downstream.count, "one score per (upstream, downstream)")
        (self.graph, self.values) = (graph, values)
    }
}

extension GPT2Model {
    public var edgeGraph: EdgeGraph { EdgeGraph(nLayers: config.nLayers, nHeads: config.nHeads) }

    /// Edge attribution of one prompt pair for the metric logit[answer] − logit[wrong] at the last
    /// position: score(u → v) = (a_u(clean) − a_u(corrupt)) · ∂m/∂(input of v), summed over
    /// positions and channels, the gradient on the corrupted run (EAP). With `igSteps` N (EAP-IG,
    /// "inputs"): the gradient averaged over the runs whose token embeddings are
    /// corrupt + k/N (clean − corrupt), k = 0…N−1. docs/patching.md "Edges".
    ///
    /// The runs k = 0…N−1 and the clean run go through the model together as the prompts of one
    /// batch (as many as `attributionBatch` allows): one forward reads every weight once for all
    /// of them, one backward once for the gradient runs (the clean run needs only its forward),
    /// and each prompt's gradient is its own.
    public func edgeAttribution(clean: [Int], corrupt: [Int], answer: Int, wrong: Int,
                                igSteps: Int? = nil) throws(GPT2Error) -> EdgeScores {
        try edgeAttribution(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong, igSteps: igSteps,
                            batch: attributionBatch(T: corrupt.count))
    }

    /// `edgeAttribution` with at most `batch` runs in one pass.
    func edgeAttribution(clean: [Int], corrupt: [Int], answer: Int, wrong: Int, igSteps: Int?,
                         batch: Int) throws(GPT2Error) -> EdgeScores {
        try checkTokens([clean, corrupt])
        let graph = edgeGraph, runs = AttributionRuns(clean: clean, corrupt: corrupt, steps: max(igSteps ?? 1, 1), model: self)
        var grads: [Float]? = nil, cleanActs: [Float] = [], corruptActs: [Float] = []
        for first in stride(from: 0, through: runs.steps, by: batch) {
            let ks = Array(first...min(first + batch - 1, runs.steps))
            let (pass, hookGradients) = try attributionPass(runs, ks, answer: answer, wrong: wrong)
            for (b, k) in ks.enumerated() where k == 0 || k == runs.steps {
                let acts = nodeActivations(pass.cache, prompt: b, graph)
                if k == 0 { corruptActs = acts } else { cleanActs = acts }
            }
            let prompts = ks.indices.filter { ks[$0] < runs.steps }
            guard let hookGradients, !prompts.isEmpty else { continue }
            // The runs' gradients summed in the order of k (as one run after the other would).
            let g = inputGradients(pass, hookGradients, prompts: prompts, from: runs.from, graph)
            if var sum = grads { for i in sum.indices { sum[i] += g[i] }; grads = sum } else { grads = g }
        }
        var mean = grads!
        if runs.steps > 1 { for i in mean.indices { mean[i] /= Float(runs.steps) } }
        return edgeScores(delta: zip(cleanActs, corruptActs).map { $0 - $1 }, grads: mean, graph)
    }

    /// How many of an attribution's runs go through the model as one batch: the forward and the
    /// backward of B prompts of T tokens within about 512 MiB, at least one.
    func attributionBatch(T: Int) -> Int {
        let perPrompt = ForwardPass.footprint(B: 1, T: T, config: config, logits: .last, backward: true)
        return max(1, (512 << 20) / max(perPrompt, 1))
    }

    /// Runs `ks` of `runs` as one batch, caching the upstream nodes' outputs at rows `runs.from`
    /// ..< T; forward and back (the gradients at the downstream nodes' hooks) when one of them
    /// is a gradient run, else forward only (nil gradients).
    func attributionPass(_ runs: AttributionRuns, _ ks: [Int], answer: Int,
                         wrong: Int) throws(GPT2Error) -> (ForwardPass, [HookName: Tensor]?) {
        let T = runs.corrupt.count, C = config.dModel
        var options = ForwardOptions(cache: nodeHooks, cachePositions: Array(runs.from..<T), logits: .last)
        if ks.contains(where: { $0 > 0 && $0 < runs.steps }) {
            let embeds = ks.flatMap { runs.embedding(k: $0, model: self) }
            options.interventions = [Intervention(.embed(), .replace(Tensor(shape: [ks.count, T, C], data: embeds)))]
        }
        let tokens = ks.map { $0 == runs.steps ? runs.clean : runs.corrupt }
        guard ks.contains(where: { $0 < runs.steps }) else {
            options.logits = .none
            return (try run(tokens, options), nil)
        }
        var hooks: Set<HookName> = []
        for l in 0..<config.nLayers {
            hooks.formUnion([HookName.Point.q, .k, .v, .residMid, .residPost].map { HookName.block(l, $0) })
        }
        options.retainForBackward = true
        let pass = try run(tokens, options, gradHooks: hooks)
        // The clean run (last when present) needs no backward: the gradient runs alone go back.
        let n = ks.filter { $0 < runs.steps }.count
        let metric = Metric.logitDifference(answer: Array(repeating: answer, count: n), wrong: Array(repeating: wrong, count: n))
        let result = try backward(n == ks.count ? pass : ForwardPass(prompts: n, of: pass), metric: metric,
                                  options: BackwardOptions(hookGradients: hooks))
        return (pass, result.hookGradients)
    }

    /// Σ over rows of delta[u] · grads[v] for every edge, NaN elsewhere: per downstream layer one
    /// product over the upstream nodes written before it (the edges alone, not every pair).
    /// `delta` (upstream, R, C), `grads` (downstream, R, C), the same R rows.
    func edgeScores(delta: [Float], grads: [Float], _ graph: EdgeGraph) -> EdgeScores {
        let nU = graph.upstream.count, nV = graph.downstream.count, NC = delta.count / nU
        var out = [Float](repeating: .nan, count: nU * nV)
        var v = 0
        while v < nV {
            // Downstream nodes v..<end read the same upstream prefix (one layer's heads, its MLP, the logits).
            let count = graph.upstreamCount(of: v)
            var end = v + 1
            while end < nV, graph.upstreamCount(of: end) == count { end += 1 }
            out.withUnsafeMutableBufferPointer { o in
                if NC == 0 { for u in 0..<count { for w in v..<end { o[u * nV + w] = 0 } }; return }
                delta.withUnsafeBufferPointer { d in
                    grads.withUnsafeBufferPointer { g in
                        sgemm(transB: true, M: count, N: end - v, K: NC, A: d.baseAddress!, lda: NC, B: g.baseAddress! + v * NC, ldb: NC,
                              C: o.baseAddress! + v, ldc: nV)
                    }
                }
            }
            v = end
        }
        return EdgeScores(graph: graph, values: out)
    }

    /// Every upstream node's output on `tokens`, (upstream, T, C) flat.
    func nodeActivations(_ tokens: [Int], _ graph: EdgeGraph) throws(GPT2Error) -> [Float] {
        try nodeActivations(run([tokens], ForwardOptions(cache: nodeHooks, logits: .none)).cache, prompt: 0, graph)
    }

    /// The hooks of the upstream nodes' outputs: `hook_embed`, `attn.hook_result`, `hook_mlp_out`.
    var nodeHooks: Set<HookName> {
        var cache: Set<HookName> = [.embed()]
        for l in 0..<config.nLayers { cache.formUnion([HookName.block(l, .result), HookName.block(l, .mlpOut)]) }
        return cache
    }

    /// Every upstream node's output in prompt `b` of a pass's `cache` of `nodeHooks` (at R
    /// positions), (upstream, R, C) flat.
    func nodeActivations(_ cache: [HookName: Tensor], prompt b: Int, _ graph: EdgeGraph) -> [Float] {
        let H = config.nHeads, C = config.dModel, R = cache[.embed()]!.shape[1]
        var out = [Float]()
        out.reserveCapacity(graph.upstream.count * R * C)
        for node in graph.upstream {
            switch node {
            case .input: out += cache[.embed()]!.data[(b * R * C)..<((b + 1) * R * C)]
            case let .mlp(l): out += cache[.block(l, .mlpOut)]!.data[(b * R * C)..<((b + 1) * R * C)]
            case let .head(l, h):
                cache[.block(l, .result)]!.data.withUnsafeBufferPointer { result in
                    for t in (b * R)..<((b + 1) * R) { out += result[((t * H + h) * C)..<((t * H + h + 1) * C)] }
                }
            case .logits: break
            }
        }
        return out
    }

    /// d metric / d (input of each downstream node) at rows `from` ..< T, summed over the prompts
    /// `prompts` of `pass` (whose backward kept `g`, the gradients at every layer's q, k, v,
    /// resid_mid and resid_post), (downstream, T − from, C) flat: a head's q/k/v input through its
    /// own columns of W_QKV and ln_1; an MLP's, d resid_mid − d resid_post (the stream's gradient
    /// less the part that skips the MLP); the logits', d final resid_post.
    func inputGradients(_ pass: ForwardPass, _ g: [HookName: Tensor], prompts: [Int], from: Int,
                        _ graph: EdgeGraph) -> [Float] {
        let L = config.nLayers, C = config.dModel, T = pass.T, RC = (T - from) * C
        let rows = prompts.flatMap { b in (b * T + from)..<(b * T + T) }
        // Σ over the prompts of a (P, prompts, RC) array: (P, RC), added in the prompts' order.
        func sum(_ x: [Float]) -> [Float] {
            let S = prompts.count, P = x.count / max(S * RC, 1)
            var out = [Float](repeating: 0, count: P * RC)
            for p in 0..<P { for s in 0..<S { for i in 0..<RC { out[p * RC + i] += x[(p * S + s) * RC + i] } } }
            return out
        }
        func stream(_ t: Tensor) -> [Float] { rows.flatMap { t.data[($0 * C)..<(($0 + 1) * C)] } }
        var out = [Float]()
        out.reserveCapacity(graph.downstream.count * RC)
        for l in 0..<L {
            out += sum(headInputGradients(l, pass, q: g[.block(l, .q)]!, k: g[.block(l, .k)]!, v: g[.block(l, .v)]!, rows: rows))
            out += sum(zip(stream(g[.block(l, .residMid)]!), stream(g[.block(l, .residPost)]!)).map { $0 - $1 })
        }
        out += sum(stream(g[.block(L - 1, .residPost)]!))
        return out
    }

    /// For each of q, k, v and each head: ln_1's backward of (d q_h · W_Q[h]ᵀ) at the pass's rows
    /// `rows` (n = b·T + t), (3, NH, rows.count, C) flat.
    func headInputGradients(_ l: Int, _ pass: ForwardPass, q: Tensor, k: Tensor, v: Tensor, rows: [Int]) -> [Float] {
        let a = pass.block(l), w = parameters.blocks[l], lns = pass.plan.blocks[l]
        let R = rows.count, C = config.dModel, NH = config.nHeads, dh = C / NH
        var out = [Float](repeating: 0, count: 3 * NH * R * C)
        var dLn = [Float](repeating: 0, count: R * C), dScale = [Float](repeating: 0, count: R)
        let x = gatherRows(a.residPre, rows, C: C)
        for (part, grad) in [q, k, v].enumerated() {
            let ln = part == 2 ? (a.ln1V ?? a.ln1) : a.ln1
            var dependsOnInput = true
            if case .fixed = (part == 2 ? lns.ln1V : lns.ln1) { dependsOnInput = false }
            let mean = gatherRows(ln.mean, rows, C: 1), scale = gatherRows(ln.scale, rows, C: 1)
            let raw = gatherRows(ln.rawScale, rows, C: 1), dqkv = grad.data.withUnsafeBufferPointer { gatherRows($0.baseAddress!, rows, C: C) }
            for h in 0..<NH {
                dLn.withUnsafeMutableBufferPointer { d in
                    d.update(repeating: 0)
                    dqkv.withUnsafeBufferPointer { dq in
                        matmulBackward(dinp: d.baseAddress!, dw: nil, dbias: nil, dout: dq.baseAddress! + h * dh, inp: x,
                                       w: w.wQKV + part * C + h * dh, N: R, IC: C, OC: dh, ldw: 3 * C, lddout: C)
                    }
                    dScale.withUnsafeMutableBufferPointer { ds in
                        out.withUnsafeMutableBufferPointer { o in
                            layerNormApplyBackward(dxhat: d.baseAddress!, dscale: ds.baseAddress!, dw: nil, db: nil, dout: d.baseAddress!,
                                                   x: x, mean: mean, scale: scale, w: w.ln1?.w, N: R, C: C)
                            layerNormStatsBackward(dx: o.baseAddress! + (part * NH + h) * R * C, dxhat: d.baseAddress!, dscale: ds.baseAddress!,
                                                   x: x, mean: mean, scale: scale, rawScale: raw, scaleDependsOnInput: dependsOnInput,
                                                   N: R, C: C)
                        }
                    }
                }
            }
        }
        return out
    }
}

/// The runs of one edge attribution: k = 0 ..< steps the corrupted prompt with its token
/// embeddings k/steps of the way to the clean prompt's (k = 0: the corrupted run itself), and
/// k = steps the clean run.
struct AttributionRuns {
    let clean: [Int], corrupt: [Int], steps: Int
    /// The first position where the prompts differ: before it every run computes what the
    /// corrupted one does (causal attention), so a_u(clean) − a_u(corrupt) is 0 there and only the
    /// rows from it count.
    let from: Int
    let cleanEmbed: [Float], corruptEmbed: [Float]   // (T, C) hook_embed

    init(clean: [Int], corrupt: [Int], steps: Int, model: GPT2Model) {
        let C = model.config.dModel
        func embed(_ ids: [Int]) -> [Float] {
            var out = [Float](repeating: 0, count: ids.count * C)
            out.withUnsafeMutableBufferPointer { embeddingForward(out: $0.baseAddress!, ids: ids, table: model.parameters.wE, C: C) }
            return out
        }
        (self.clean, self.corrupt, self.steps) = (clean, corrupt, steps)
        from = firstDifference(clean, corrupt)
        (cleanEmbed, corruptEmbed) = (embed(clean), embed(corrupt))
    }

    /// Run k's token embeddings, (T, C).
    func embedding(k: Int, model: GPT2Model) -> [Float] {
        if k == steps { return cleanEmbed }
        var out = corruptEmbed
        guard k > 0 else { return out }
        for i in (from * model.config.dModel)..<out.count { out[i] += Float(k) / Float(steps) * (cleanEmbed[i] - corruptEmbed[i]) }
        return out
    }
}

extension GPT2Model {
    /// The exact effect of each edge alone (path patching, denoising): the corrupted run with only
    /// v's input (head h's q, k or v copy of `resid_pre`, the MLP's input, the final `resid_post`)
    /// given a_u(clean) − a_u(corrupt) more, everything else recomputed from it as the model does;
    /// metric(that run) − metric(corrupted run), the metric as in `edgeAttribution`. A head's or
    /// MLP's changed input is first run through its own LayerNorm (a forward with the stream
    /// changed there, its q/k/v or `ln2.hook_normalized` kept), then written into head h's q/k/v
    /// alone or into the MLP's normalized input alone. 1 + 2 forwards per edge.
    public func exactEdgeEffects(clean: [Int], corrupt: [Int], answer: Int, wrong: Int) throws(GPT2Error) -> EdgeScores {
        let graph = edgeGraph, T = corrupt.count, C = config.dModel, nU = graph.upstream.count, nV = graph.downstream.count
        let cleanActs = try nodeActivations(clean, graph), corruptActs = try nodeActivations(corrupt, graph)
        let base = try logitDifference(corrupt, [], answer: answer, wrong: wrong)
        var out = [Float](repeating: .nan, count: nU * nV)
        for u in 0..<nU {
            let range = (u * T * C)..<((u + 1) * T * C)
            let delta = Tensor(shape: [1, T, C], data: zip(cleanActs[range], corruptActs[range]).map { $0 - $1 })
            for v in 0..<nV where graph.isEdge(u, v) {
                let patch = try edgePatch(graph.downstream[v], delta: delta, corrupt)
                out[u * nV + v] = Float(try logitDifference(corrupt, patch, answer: answer, wrong: wrong) - base)
            }
        }
        return EdgeScores(graph: graph, values: out)
    }

    /// The intervention that adds `delta` to downstream node `d`'s input alone.
    func edgePatch(_ d: EdgeGraph.Downstream, delta: Tensor, _ tokens: [Int]) throws(GPT2Error) -> [Intervention] {
        switch d.node {
        case .logits, .input:
            return [Intervention(.block(config.nLayers - 1, .residPost), .add(delta))]
        case let .mlp(l):
            let normalized = HookName.block(l, .ln2Normalized)
            let pass = try run([tokens], ForwardOptions(cache: [normalized], interventions: [Intervention(.block(l, .residMid), .add(delta))],
                                                        logits: .none))
            return [Intervention(normalized, .replace(pass.cache[normalized]!))]
        case let .head(l, h):
            let name = HookName.block(l, [HookName.Point.q, .k, .v][EdgeGraph.HeadInput.allCases.firstIndex(of: d.input!)!])
            let pass = try run([tokens], ForwardOptions(cache: [name], interventions: [Intervention(.block(l, .residPre), .add(delta))],
                                                        logits: .none))
            return [Intervention(name, heads: [h], .replace(pass.cache[name]!))]
        }
    }

    /// logit[answer] − logit[wrong] at the last position of `tokens` run with `interventions`.
    func logitDifference(_ tokens: [Int], _ interventions: [Intervention], answer: Int, wrong: Int) throws(GPT2Error) -> Double {
        let pass = try run([tokens], ForwardOptions(interventions: interventions, logits: .last))
        let row = pass.logits + (pass.logitRows.count - 1) * config.dVocab
        return Double(row[answer]) - Double(row[wrong])
    }
}
