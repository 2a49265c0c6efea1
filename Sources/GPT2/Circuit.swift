import Foundation
import TensorCore

/// A circuit: a set of edges of an `EdgeGraph` (hannamw/EAP-IG's `Graph.in_graph`), with that
/// repository's selections (`apply_topn`, `apply_greedy`, `apply_threshold`) and its `prune`.
/// `mask[u · downstream.count + v]` is true when edge u → v is kept; never true on a non-edge.
public struct Circuit: Sendable, Equatable {
    public let graph: EdgeGraph
    public private(set) var mask: [Bool]

    /// The circuit of the edges `mask` marks (non-edges ignored).
    public init(graph: EdgeGraph, mask: [Bool]) {
        precondition(mask.count == graph.upstream.count * graph.downstream.count, "a circuit's mask has one entry per (upstream, downstream)")
        let nV = graph.downstream.count
        self.graph = graph
        self.mask = mask.indices.map { mask[$0] && graph.isEdge($0 / nV, $0 % nV) }
    }

    /// The circuit of `edges`, each (upstream index, downstream index).
    public init(graph: EdgeGraph, edges: some Sequence<(upstream: Int, downstream: Int)>) {
        var mask = [Bool](repeating: false, count: graph.upstream.count * graph.downstream.count)
        for e in edges { mask[e.upstream * graph.downstream.count + e.downstream] = true }
        self.init(graph: graph, mask: mask)
    }

    public static func empty(_ graph: EdgeGraph) -> Circuit {
        Circuit(graph: graph, mask: [Bool](repeating: false, count: graph.upstream.count * graph.downstream.count))
    }

    public static func full(_ graph: EdgeGraph) -> Circuit {
        Circuit(graph: graph, mask: [Bool](repeating: true, count: graph.upstream.count * graph.downstream.count))
    }

    public func contains(_ u: Int, _ v: Int) -> Bool { mask[u * graph.downstream.count + v] }
    public var edgeCount: Int { mask.reduce(0) { $0 + ($1 ? 1 : 0) } }
    /// The kept edges, (upstream, downstream), in mask order.
    public var edges: [(upstream: Int, downstream: Int)] {
        let nV = graph.downstream.count
        return mask.indices.filter { mask[$0] }.map { ($0 / nV, $0 % nV) }
    }

    /// hannamw's `Graph.prune`: repeatedly keep only the nodes with a kept edge out and one in (the
    /// input needs none in; the logits are always kept) and the edges between kept nodes, until
    /// nothing changes. What remains is connected from the input to the logits.
    public func pruned() -> Circuit {
        let nU = graph.upstream.count, nV = graph.downstream.count
        let owner = graph.downstream.map { graph.upstreamIndex(of: $0.node) }
        var mask = self.mask
        while true {
            var out = [Bool](repeating: false, count: nU), into = [Bool](repeating: false, count: nU)
            into[0] = true
            for i in mask.indices where mask[i] {
                out[i / nV] = true
                if let o = owner[i % nV] { into[o] = true }
            }
            var changed = false
            for i in mask.indices where mask[i] {
                let u = i / nV, o = owner[i % nV]
                if !(out[u] && into[u]) || o.map({ !(out[$0] && into[$0]) }) == true {
                    mask[i] = false
                    changed = true
                }
            }
            if !changed { return Circuit(graph: graph, mask: mask) }
        }
    }
}

extension EdgeGraph {
    /// The upstream index of a node that writes the stream (nil for the logits).
    public func upstreamIndex(of node: Node) -> Int? {
        switch node {
        case .input: 0
        case let .head(l, h): 1 + l * (nHeads + 1) + h
        case let .mlp(l): 1 + l * (nHeads + 1) + nHeads
        case .logits: nil
        }
    }
}

/// How a faithfulness curve picks the circuit of each size (hannamw/EAP-IG's `Graph` methods,
/// always by |score|).
public enum CircuitSelection: String, Sendable, CaseIterable {
    /// `apply_topn`: the n edges of largest |score|.
    case top
    /// `apply_greedy`: from the logits up, each step the largest |score| among the edges into
    /// nodes already in the circuit.
    case greedy
}

extension Circuit {
    /// The edges by |score| (or score), largest first, ties by index; non-edges and NaN left out.
    static func ranked(_ scores: EdgeScores, absolute: Bool) -> [Int] {
        let key = scores.values.map { absolute ? abs($0) : $0 }
        let nV = scores.graph.downstream.count
        return key.indices.filter { scores.graph.isEdge($0 / nV, $0 % nV) && !key[$0].isNaN }
            .sorted { key[$0] != key[$1] ? key[$0] > key[$1] : $0 < $1 }
    }

    /// hannamw's `apply_topn(n, absolute)`: the n edges of largest |score| (n beyond the edges:
    /// all), then pruned when `prune`.
    public static func top(_ n: Int, of scores: EdgeScores, absolute: Bool = true, prune: Bool = true) -> Circuit {
        var mask = [Bool](repeating: false, count: scores.values.count)
        for i in ranked(scores, absolute: absolute).prefix(max(0, n)) { mask[i] = true }
        let c = Circuit(graph: scores.graph, mask: mask)
        return prune ? c.pruned() : c
    }

    /// hannamw's `apply_threshold(t, absolute)`: every edge with |score| ≥ t, then pruned.
    public static func threshold(_ t: Float, of scores: EdgeScores, absolute: Bool = true, prune: Bool = true) -> Circuit {
        let c = Circuit(graph: scores.graph, mask: scores.values.map { !$0.isNaN && (absolute ? abs($0) : $0) >= t })
        return prune ? c.pruned() : c
    }

    /// hannamw's `apply_greedy(n, absolute)`: starting from the edges into the logits, n times take
    /// the candidate edge of largest |score|; when its upstream node joins the circuit, the edges
    /// into that node (its q, k, v or MLP input) become candidates. Then pruned when `prune`.
    public static func greedy(_ n: Int, of scores: EdgeScores, absolute: Bool = true, prune: Bool = true) -> Circuit {
        let graph = scores.graph, nV = graph.downstream.count
        let rank = [Int](unsafeUninitializedCapacity: scores.values.count) { buffer, count in
            for (r, i) in ranked(scores, absolute: absolute).enumerated() { buffer[i] = r }
            count = scores.values.count
        }
        var inputs = [[Int]](repeating: [], count: graph.upstream.count)
        for (v, d) in graph.downstream.enumerated() { if let o = graph.upstreamIndex(of: d.node) { inputs[o].append(v) } }
        var heap = MinHeap(), joined = [Bool](repeating: false, count: graph.upstream.count)
        func offer(_ v: Int) { for u in 0..<graph.upstreamCount(of: v) where !scores[u, v].isNaN { heap.push(rank[u * nV + v]) } }
        offer(nV - 1)
        var mask = [Bool](repeating: false, count: scores.values.count)
        let order = ranked(scores, absolute: absolute)
        for _ in 0..<max(0, n) {
            guard let r = heap.pop() else { break }
            let i = order[r], u = i / nV
            mask[i] = true
            if !joined[u] {
                joined[u] = true
                inputs[u].forEach(offer)
            }
        }
        let c = Circuit(graph: graph, mask: mask)
        return prune ? c.pruned() : c
    }
}

/// A binary min-heap of ranks (0: the largest score), for the greedy selection.
struct MinHeap {
    private var items: [Int] = []

    mutating func push(_ x: Int) {
        items.append(x)
        var i = items.count - 1
        while i > 0, items[(i - 1) / 2] > items[i] {
            items.swapAt(i, (i - 1) / 2)
            i = (i - 1) / 2
        }
    }

    mutating func pop() -> Int? {
        guard let top = items.first else { return nil }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count, items[l] < items[m] { m = l }
            if r < items.count, items[r] < items[m] { m = r }
            if m == i { return top }
            items.swapAt(i, m)
            i = m
        }
    }
}

/// One prompt pair prepared for evaluating circuits: the corrupted run's node activations (the
/// values every edge outside a circuit carries) and the metric of the clean and corrupted runs.
public struct CircuitPair: Sendable {
    public let clean: [Int], corrupt: [Int]
    public let answer: Int, wrong: Int
    /// Every upstream node's output on `corrupt`, (upstream, T, C) flat.
    let corruptActivations: [Float]
    /// logit[answer] − logit[wrong] at the last position of the clean and the corrupted run.
    public let cleanMetric: Double, corruptMetric: Double

    /// (m − m_corrupt) / (m_clean − m_corrupt): 1 at the clean run, 0 at the corrupted run.
    public func normalized(_ m: Double) -> Double { (m - corruptMetric) / (cleanMetric - corruptMetric) }
}

/// One point of a faithfulness curve.
public struct FaithfulnessPoint: Sendable, Equatable {
    /// The size asked for (n of `apply_topn` / `apply_greedy`).
    public let requested: Int
    /// Edges in the circuit evaluated (after pruning).
    public let edges: Int
    public let metric: Double
    /// `CircuitPair.normalized(metric)`.
    public let normalized: Double
}

extension GPT2Model {
    /// The corrupted run's node activations and both runs' metric, for `circuitMetric` (3 forwards).
    public func circuitPair(clean: [Int], corrupt: [Int], answer: Int, wrong: Int) throws(GPT2Error) -> CircuitPair {
        try checkTokens([clean, corrupt])
        for id in [answer, wrong] where id < 0 || id >= config.dVocab {
            throw .tokenOutOfVocabulary(what: "answer", id: id, dVocab: config.dVocab)
        }
        return CircuitPair(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong,
                           corruptActivations: try nodeActivations(corrupt, edgeGraph),
                           cleanMetric: try logitDifference(clean, [], answer: answer, wrong: wrong),
                           corruptMetric: try logitDifference(corrupt, [], answer: answer, wrong: wrong))
    }

    /// The metric of `circuit` (hannamw/EAP-IG's `evaluate_graph`, intervention 'patching'): the
    /// clean run in which every edge u → v outside the circuit carries the corrupted run's a_u
    /// instead of this run's: v's input (head h's own q, k or v copy of `resid_pre`, the MLP's
    /// `hook_mlp_in`, the final `resid_post` for the logits) is this run's stream plus
    /// Σ over those edges of (a_u(corrupt) − a_u(this run)), recomputed layer by layer; the
    /// residual stream itself is this run's. With `prune` (as `evaluate_graph` always does) the
    /// circuit is first pruned to the edges on paths from the input to the logits. One forward.
    public func circuitMetric(_ circuit: Circuit, _ pair: CircuitPair, prune: Bool = true) throws(GPT2Error) -> Double {
        precondition(circuit.graph == edgeGraph, "a circuit of another model's graph")
        let c = prune ? circuit.pruned() : circuit
        let run = CircuitRun(model: self, circuit: c, pair: pair)
        defer { run.release() }
        return run.metric()
    }

    /// The faithfulness curve of `scores`: for each n of `sizes`, the circuit `selection` picks
    /// (pruned), its metric and its metric normalised by the clean and corrupted runs'.
    public func faithfulness(_ scores: EdgeScores, sizes: [Int], selection: CircuitSelection = .top,
                             _ pair: CircuitPair) throws(GPT2Error) -> [FaithfulnessPoint] {
        var out: [FaithfulnessPoint] = []
        for n in sizes {
            let circuit = selection == .top ? Circuit.top(n, of: scores) : Circuit.greedy(n, of: scores)
            let m = try circuitMetric(circuit, pair, prune: false)
            out.append(FaithfulnessPoint(requested: n, edges: circuit.edgeCount, metric: m, normalized: pair.normalized(m)))
        }
        return out
    }
}

/// One circuit's forward over the clean tokens, layer by layer (B = 1, N = T rows). Buffers:
/// `diff (upstream, T, C)`: a_u(corrupt) − a_u(this run), filled as the nodes are computed;
/// `open (downstream, upstream)`: 1 where u → v is an edge outside the circuit.
final class CircuitRun {
    let model: GPT2Model
    let pair: CircuitPair
    let T: Int, C: Int, NH: Int, nU: Int, nV: Int
    /// The first position where the clean and corrupted prompts differ (T when none does).
    let from: Int
    let open: FloatPointer       // (nV, nU)
    let diff: FloatPointer       // (nU, T, C)
    let stream: FloatPointer     // (T, C) this run's residual stream
    let inputs: FloatPointer     // (3·NH, T, C) the inputs of one layer's downstream nodes
    let normed: FloatPointer     // (T, C)
    let qkv: FloatPointer        // (T, 3C)
    let att: FloatPointer        // (NH, T, T)
    let z: FloatPointer          // (T, C)
    let result: FloatPointer     // (T, NH, C)
    let hidden: FloatPointer     // (T, M)
    let mlpOut: FloatPointer     // (T, C)
    let mean: FloatPointer, scale: FloatPointer  // (T)

    init(model: GPT2Model, circuit: Circuit, pair: CircuitPair) {
        let cfg = model.config, graph = circuit.graph
        self.model = model
        self.pair = pair
        T = pair.clean.count
        from = firstDifference(pair.clean, pair.corrupt)
        C = cfg.dModel
        NH = cfg.nHeads
        nU = graph.upstream.count
        nV = graph.downstream.count
        func take(_ n: Int) -> FloatPointer { let p = FloatPointer.allocate(capacity: n); p.initialize(repeating: 0, count: n); return p }
        open = take(nV * nU)
        diff = take(nU * T * C)
        stream = take(T * C)
        inputs = take(3 * NH * T * C)
        normed = take(T * C)
        qkv = take(3 * T * C)
        att = take(NH * T * T)
        z = take(T * C)
        result = take(T * NH * C)
        hidden = take(T * cfg.dMLP)
        mlpOut = take(T * C)
        mean = take(T)
        scale = take(T)
        for v in 0..<nV { for u in 0..<graph.upstreamCount(of: v) where !circuit.contains(u, v) { open[v * nU + u] = 1 } }
    }

    func release() {
        for p in [open, diff, stream, inputs, normed, qkv, att, z, result, hidden, mlpOut, mean, scale] { p.deallocate() }
    }
}

extension CircuitRun {
    /// The metric of this run: embeddings, each block's attention and MLP on their constructed
    /// inputs, the final LayerNorm on the logits' constructed input, the last row unembedded.
    func metric() -> Double {
        let p = model.parameters, plan = model.layerNormPlan, V = model.config.dVocab
        embeddingForward(out: stream, ids: pair.clean, table: p.wE, C: C)
        record(0, stream, rowStride: C)
        embeddingForward(out: normed, ids: Array(0..<T), table: p.wPos, C: C)
        for i in 0..<(T * C) { stream[i] += normed[i] }
        for l in 0..<model.config.nLayers {
            attention(l, plan.blocks[l], rawEps: plan.rawEps)
            mlp(l, plan.blocks[l].ln2, rawEps: plan.rawEps)
        }
        constructInputs(first: nV - 1, count: 1, upstream: nU)
        normalize(inputs, p.lnF, plan.final, rawEps: plan.rawEps)
        var logits = [Float](repeating: 0, count: V)
        logits.withUnsafeMutableBufferPointer {
            unembedRowsForward(logits: $0.baseAddress!, x: normed, rows: [T - 1], wU: p.wU, bU: p.bU, C: C, V: V)
        }
        return Double(logits[pair.answer]) - Double(logits[pair.wrong])
    }

    /// Block l's heads, each of q, k, v from its own input through ln_1 and its own columns of
    /// W_QKV; the heads' outputs added to the stream and recorded.
    func attention(_ l: Int, _ lns: LayerNormPlan.Block, rawEps: Float) {
        let w = model.parameters.blocks[l], dh = C / NH, first = 1 + l * (NH + 1)
        constructInputs(first: l * (3 * NH + 1), count: 3 * NH, upstream: first)
        for part in 0..<3 {
            for h in 0..<NH {
                normalize(inputs + (part * NH + h) * T * C, w.ln1, part == 2 ? lns.ln1V : lns.ln1, rawEps: rawEps)
                let column = part * C + h * dh
                matmulForward(out: qkv + column, inp: normed, w: w.wQKV + column, bias: w.bQKV + column, N: T, IC: C, OC: dh,
                              ldw: 3 * C, ldout: 3 * C)
            }
        }
        let segments = AttentionSegment.batch(B: 1, T: T, NH: NH)
        attentionScoresForward(att: att, qkv: qkv, segments: segments, C: C, NH: NH, alpha: model.attentionScale(layer: l))
        attentionSoftmaxForward(att: att, segments: segments, NH: NH)
        attentionValuesForward(z: z, pattern: att, qkv: qkv, segments: segments, C: C, NH: NH)
        headOutputForward(result: result, z: z, wO: w.wO, N: T, C: C, NH: NH)
        headSumForward(out: mlpOut, result: result, bO: w.bO, N: T, C: C, NH: NH)
        for i in 0..<(T * C) { stream[i] += mlpOut[i] }
        for h in 0..<NH { record(first + h, result + h * C, rowStride: NH * C) }
    }

    /// Block l's MLP on its constructed input; its output added to the stream and recorded.
    func mlp(_ l: Int, _ ln2: LayerNormScale, rawEps: Float) {
        let w = model.parameters.blocks[l], M = model.config.dMLP, node = 1 + l * (NH + 1) + NH
        constructInputs(first: l * (3 * NH + 1) + 3 * NH, count: 1, upstream: node)
        normalize(inputs, w.ln2, ln2, rawEps: rawEps)
        matmulForward(out: hidden, inp: normed, w: w.wIn, bias: w.bIn, N: T, IC: C, OC: M)
        geluForward(out: hidden, inp: hidden, n: T * M)
        matmulForward(out: mlpOut, inp: hidden, w: w.wOut, bias: w.bOut, N: T, IC: M, OC: C)
        for i in 0..<(T * C) { stream[i] += mlpOut[i] }
        record(node, mlpOut, rowStride: C)
    }

    /// `inputs[r] = stream + Σ_u open[first + r, u] · diff[u]` for r < count, over the first
    /// `upstream` nodes (those written before these downstream nodes read): one product, over the
    /// positions from the first where the prompts differ (before it both runs, and so every
    /// difference, are the same: causal attention).
    func constructInputs(first: Int, count: Int, upstream: Int) {
        for r in 0..<count { (inputs + r * T * C).update(from: stream, count: T * C) }
        let rows = UnsafeBufferPointer(start: open + first * nU, count: count * nU)
        guard from < T, rows.contains(where: { $0 != 0 }) else { return }
        sgemm(M: count, N: (T - from) * C, K: upstream, A: open + first * nU, lda: nU, B: diff + from * C, ldb: T * C, beta: 1,
              C: inputs + from * C, ldc: T * C)
    }

    /// `diff[u] = a_u(corrupt) − a`, `a` (T, C) with rows `rowStride` apart.
    func record(_ u: Int, _ a: ConstFloatPointer, rowStride: Int) {
        pair.corruptActivations.withUnsafeBufferPointer { corrupt in
            for t in 0..<T {
                let d = diff + (u * T + t) * C, c = corrupt.baseAddress! + (u * T + t) * C, x = a + t * rowStride
                for i in 0..<C { d[i] = c[i] - x[i] }
            }
        }
    }

    /// `normed = LayerNorm(x)` (T rows), as the forward computes it.
    func normalize(_ x: ConstFloatPointer, _ weights: LayerNormWeights?, _ scale: LayerNormScale, rawEps: Float) {
        layerNormStats(mean: mean, scale: self.scale, rawScale: nil, x: x, N: T, C: C, mode: scale, rawEps: rawEps)
        layerNormApply(out: normed, x: x, mean: mean, scale: self.scale, w: weights?.w, b: weights?.b, N: T, C: C)
    }
}
