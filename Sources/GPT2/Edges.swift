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

/// A score per edge: `values[u · downstream.count + v]`, NaN where u → v is no edge.
public struct EdgeScores: Sendable {
    public let graph: EdgeGraph
    public var values: [Float]
    public subscript(u: Int, v: Int) -> Float { values[u * graph.downstream.count + v] }
}

extension GPT2Model {
    public var edgeGraph: EdgeGraph { EdgeGraph(nLayers: config.nLayers, nHeads: config.nHeads) }

    /// Edge attribution of one prompt pair for the metric logit[answer] − logit[wrong] at the last
    /// position: score(u → v) = (a_u(clean) − a_u(corrupt)) · ∂m/∂(input of v), summed over
    /// positions and channels, the gradient on the corrupted run (EAP). With `igSteps` N (EAP-IG,
    /// "inputs"): the gradient averaged over the runs whose token embeddings are
    /// corrupt + k/N (clean − corrupt), k = 0…N−1. docs/patching.md "Edges".
    public func edgeAttribution(clean: [Int], corrupt: [Int], answer: Int, wrong: Int,
                                igSteps: Int? = nil) throws(GPT2Error) -> EdgeScores {
        let graph = edgeGraph, steps = igSteps ?? 1
        let cleanActs = try nodeActivations(clean, graph), corruptActs = try nodeActivations(corrupt, graph)
        let delta = zip(cleanActs, corruptActs).map { $0 - $1 }
        let metric = Metric.logitDifference(answer: [answer], wrong: [wrong])
        var grads = [Float](repeating: 0, count: graph.downstream.count * corrupt.count * config.dModel)
        for k in 0..<steps {
            var options = ForwardOptions(logits: .last)
            if k > 0 {
                let embed = (0..<corruptActs.count / graph.upstream.count).map { i in
                    corruptActs[i] + Float(k) / Float(steps) * delta[i]
                }
                options.interventions = [Intervention(.embed(), .replace(Tensor(shape: [1, corrupt.count, config.dModel], data: embed)))]
            }
            let g = try inputGradients(corrupt, metric: metric, options: options, graph)
            for i in grads.indices { grads[i] += g[i] / Float(steps) }
        }
        return edgeScores(delta: delta, grads: grads, graph)
    }

    /// Σ over rows of delta[u] · grads[v] for every edge, NaN elsewhere.
    func edgeScores(delta: [Float], grads: [Float], _ graph: EdgeGraph) -> EdgeScores {
        let nU = graph.upstream.count, nV = graph.downstream.count, NC = delta.count / nU
        var out = [Float](repeating: 0, count: nU * nV)
        out.withUnsafeMutableBufferPointer { o in
            delta.withUnsafeBufferPointer { d in
                grads.withUnsafeBufferPointer { g in
                    matmulBackward(dinp: o.baseAddress!, dw: nil, dbias: nil, dout: d.baseAddress!, inp: d.baseAddress!,
                                   w: g.baseAddress!, N: nU, IC: nV, OC: NC)
                }
            }
        }
        for u in 0..<nU { for v in 0..<nV where !graph.isEdge(u, v) { out[u * nV + v] = .nan } }
        return EdgeScores(graph: graph, values: out)
    }

    /// Every upstream node's output on `tokens`, (upstream, T, C) flat.
    func nodeActivations(_ tokens: [Int], _ graph: EdgeGraph) throws(GPT2Error) -> [Float] {
        let L = config.nLayers, H = config.nHeads, C = config.dModel, T = tokens.count
        var cache: Set<HookName> = [.embed()]
        for l in 0..<L { cache.formUnion([HookName.block(l, .result), HookName.block(l, .mlpOut)]) }
        let pass = try run([tokens], ForwardOptions(cache: cache, logits: .none))
        var out = [Float]()
        out.reserveCapacity(graph.upstream.count * T * C)
        for node in graph.upstream {
            switch node {
            case .input: out += pass.cache[.embed()]!.data
            case let .mlp(l): out += pass.cache[.block(l, .mlpOut)]!.data
            case let .head(l, h):
                let result = pass.cache[.block(l, .result)]!.data
                for t in 0..<T { out += result[((t * H + h) * C)..<((t * H + h + 1) * C)] }
            case .logits: break
            }
        }
        return out
    }

    /// d metric / d (input of each downstream node) on `tokens`, (downstream, T, C) flat: a head's
    /// q/k/v input through its own columns of W_QKV and ln_1; an MLP's, d resid_mid − d resid_post
    /// (the stream's gradient less the part that skips the MLP); the logits', d final resid_post.
    func inputGradients(_ tokens: [Int], metric: Metric, options: ForwardOptions, _ graph: EdgeGraph) throws(GPT2Error) -> [Float] {
        let L = config.nLayers, C = config.dModel, N = tokens.count
        var hooks: Set<HookName> = []
        for l in 0..<L {
            hooks.formUnion([HookName.Point.q, .k, .v, .residMid, .residPost].map { HookName.block(l, $0) })
        }
        let (pass, result) = try gradients([tokens], metric: metric, forward: options, backward: BackwardOptions(hookGradients: hooks))
        let g = result.hookGradients
        var out = [Float]()
        out.reserveCapacity(graph.downstream.count * N * C)
        for l in 0..<L {
            out += try headInputGradients(l, pass, q: g[.block(l, .q)]!, k: g[.block(l, .k)]!, v: g[.block(l, .v)]!)
            out += zip(g[.block(l, .residMid)]!.data, g[.block(l, .residPost)]!.data).map { $0 - $1 }
        }
        out += g[.block(L - 1, .residPost)]!.data
        return out
    }

    /// For each of q, k, v and each head: ln_1's backward of (d q_h · W_Q[h]ᵀ), (3, NH, N, C) flat.
    func headInputGradients(_ l: Int, _ pass: ForwardPass, q: Tensor, k: Tensor, v: Tensor) throws(GPT2Error) -> [Float] {
        let a = pass.block(l), w = parameters.blocks[l], lns = pass.plan.blocks[l]
        let N = pass.N, C = config.dModel, NH = config.nHeads, dh = C / NH
        let scratch = try BackwardScratch(pass: pass, config: config)
        defer { scratch.release() }
        var runner = pass.runner
        var out = [Float](repeating: 0, count: 3 * NH * N * C)
        var dLn = [Float](repeating: 0, count: N * C)
        for (part, grad) in [q, k, v].enumerated() {
            let ln = part == 2 ? (a.ln1V ?? a.ln1) : a.ln1, scale = part == 2 ? lns.ln1V : lns.ln1
            for h in 0..<NH {
                try dLn.withUnsafeMutableBufferPointer { (d) throws(GPT2Error) in
                    d.update(repeating: 0)
                    grad.data.withUnsafeBufferPointer { dq in
                        matmulBackward(dinp: d.baseAddress!, dw: nil, dbias: nil, dout: dq.baseAddress! + h * dh, inp: dq.baseAddress!,
                                       w: w.wQKV + part * C + h * dh, N: N, IC: C, OC: dh, ldw: 3 * C, lddout: C)
                    }
                    try out.withUnsafeMutableBufferPointer { (o) throws(GPT2Error) in
                        try layerNormBackward(ln, input: a.residPre, dOut: d.baseAddress!, dInput: o.baseAddress! + ((part * NH + h) * N * C),
                                              weights: w.ln1, gradients: nil, scale: scale, freeze: false, hooks: nil,
                                              pass.rows, scratch, &runner)
                    }
                }
            }
        }
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
