import Foundation
import TensorCore

/// One edge of an `EdgeGraph`: indices into its `upstream` and `downstream`.
public struct EdgeIndex: Hashable, Sendable {
    public let u: Int, v: Int
    public init(u: Int, v: Int) { (self.u, self.v) = (u, v) }
}

extension EdgeGraph {
    /// Every edge, upstream-major (the order of `EdgeScores.values`).
    public var edges: [EdgeIndex] {
        upstream.indices.flatMap { u in downstream.indices.filter { isEdge(u, $0) }.map { EdgeIndex(u: u, v: $0) } }
    }
}

extension EdgeScores {
    /// The score of edge `e`.
    public subscript(_ e: EdgeIndex) -> Float { self[e.u, e.v] }

    /// The `k` edges with the largest |score| (ties: the earlier edge in `graph.edges` first), in
    /// that order; every edge when `k` ≥ the edge count.
    public func top(_ k: Int) -> [EdgeIndex] {
        let all = graph.edges
        let ranked = all.indices.sorted { a, b in
            let x = abs(self[all[a]]), y = abs(self[all[b]])
            return x != y ? x > y : a < b
        }
        return ranked.prefix(max(0, k)).map { all[$0] }
    }
}

extension GPT2Model {
    /// `exactEdgeEffects` for the chosen `edges` only (NaN elsewhere): the same path patching of
    /// each edge alone, 1 + 2 forwards per edge, so that top-k by EAP is affordable on GPT-2 small.
    public func exactEdgeEffects(clean: [Int], corrupt: [Int], answer: Int, wrong: Int,
                                 edges: [EdgeIndex]) throws(GPT2Error) -> EdgeScores {
        let graph = edgeGraph, T = corrupt.count, C = config.dModel, nV = graph.downstream.count
        let cleanActs = try nodeActivations(clean, graph), corruptActs = try nodeActivations(corrupt, graph)
        let base = try logitDifference(corrupt, [], answer: answer, wrong: wrong)
        var out = [Float](repeating: .nan, count: graph.upstream.count * nV)
        var deltas: [Int: Tensor] = [:]
        for e in edges where graph.isEdge(e.u, e.v) {
            let range = (e.u * T * C)..<((e.u + 1) * T * C)
            let delta = deltas[e.u] ?? Tensor(shape: [1, T, C], data: zip(cleanActs[range], corruptActs[range]).map { $0 - $1 })
            deltas[e.u] = delta
            let patch = try edgePatch(graph.downstream[e.v], delta: delta, corrupt)
            out[e.u * nV + e.v] = Float(try logitDifference(corrupt, patch, answer: answer, wrong: wrong) - base)
        }
        return EdgeScores(graph: graph, values: out)
    }

    /// The metric of the edge methods, logit[answer] − logit[wrong] at the last position of
    /// `tokens` (unpatched).
    public func logitDifference(_ tokens: [Int], answer: Int, wrong: Int) throws(GPT2Error) -> Double {
        try logitDifference(tokens, [], answer: answer, wrong: wrong)
    }
}
