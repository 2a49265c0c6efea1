import Foundation
import GPT2
import TensorCore

/// Entropy ("confidence") neurons as the companion code finds and ablates them
/// (mech_interp/entropy_neurons/ of submarat/removing-layer-norm at a15a638): last-layer MLP
/// neurons whose output weight w_out has a large norm but an almost flat effect on the logits —
/// it lies in W_U's near-null space, so it moves the logits through the final LayerNorm's scale
/// rather than directly. docs/analyses.md has the formulas.
public enum EntropyNeurons {
    /// What the weights say of every last-layer neuron, and the SVD of W_U.
    public struct Weights: Sendable {
        /// ‖w_out‖ (`svd_comparison.py`'s `L2_Wout`).
        public var norm: [Double]
        /// LogitVar: the variance over the vocabulary (unbiased) of cos(w_out, W_U[:, v]).
        public var logitVar: [Double]
        /// ‖w_out‖ / LogitVar, the companion's ranking score.
        public var ratio: [Double]
        /// Neurons by `ratio`, largest first (the companion's `top_indices`).
        public var ranking: [Int]
        /// W_U's singular values divided by the largest, largest first (`norm_S`).
        public var singularValues: [Double]
        /// Per neuron, Σ cos² of w_out with the `nullDims` last left singular vectors.
        public var nullFraction: [Double]
        public var nullDims: Int
        /// |cos| of each neuron's w_out with every left singular vector, largest singular value
        /// first: `cosines[n · C + j]` (`svd_comparison.py`'s `cos_sim` of its top neuron).
        public var cosines: [Double]
        public var dModel: Int { singularValues.count }

        public func cosines(of neuron: Int) -> ArraySlice<Double> { cosines[(neuron * dModel)..<((neuron + 1) * dModel)] }
    }

    /// The default number of bottom singular directions: 50 (the range the companion's SVD figure
    /// shows for GPT-2 small and medium), at most d_model / 8.
    public static func defaultNullDims(dModel: Int) -> Int { max(1, min(50, dModel / 8)) }

    /// `Weights` of the model's last layer, from its processed weights as loaded.
    public static func weights(model: GPT2Model, nullDims: Int) throws -> Weights {
        let cfg = model.config, C = cfg.dModel, V = cfg.dVocab, M = cfg.dMLP
        let p = model.parameters
        // Gram matrices of W_U's columns (TransformerLens layout: d_model × vocab) and of the
        // normalised ones, and the sum of the normalised columns, in blocks of the vocabulary.
        var gram = [Double](repeating: 0, count: C * C), gramNormed = gram
        var sumNormed = [Double](repeating: 0, count: C)
        let block = 2048
        for start in stride(from: 0, to: V, by: block) {
            let k = min(block, V - start)
            var a = [Double](repeating: 0, count: k * C), normed = a
            for r in 0..<k {
                let row = p.wU + (start + r) * C
                var s = 0.0
                for c in 0..<C { a[r * C + c] = Double(row[c]); s += a[r * C + c] * a[r * C + c] }
                let inv = s > 0 ? 1 / s.squareRoot() : 0
                for c in 0..<C { normed[r * C + c] = a[r * C + c] * inv; sumNormed[c] += normed[r * C + c] }
            }
            gramAccumulate(&gram, a: a, rows: k, n: C)
            gramAccumulate(&gramNormed, a: normed, rows: k, n: C)
        }
        symmetrize(&gramNormed, n: C)
        guard let eigen = symmetricEigen(gram, n: C) else { throw AnalysisError.eigensolverFailed(what: "W_U W_Uᵀ") }
        let wOut = lastWOut(model)
        let norms = (0..<M).map { n in (0..<C).reduce(0.0) { $0 + wOut[n * C + $1] * wOut[n * C + $1] }.squareRoot() }
        let unit = (0..<(M * C)).map { norms[$0 / C] > 0 ? wOut[$0] / norms[$0 / C] : 0 }
        let gu = dgemm(unit, gramNormed, m: M, k: C, n: C)
        let logitVar = (0..<M).map { n -> Double in
            var sum = 0.0, square = 0.0
            for c in 0..<C { sum += unit[n * C + c] * sumNormed[c]; square += gu[n * C + c] * unit[n * C + c] }
            return (square - sum * sum / Double(V)) / Double(V - 1)
        }
        let ratio = zip(norms, logitVar).map { $0 / $1 }
        let ranking = (0..<M).sorted { ratio[$0] != ratio[$1] ? ratio[$0] > ratio[$1] : $0 < $1 }
        // Left singular vectors, largest singular value first: eigenvectors of W_U W_Uᵀ, reversed.
        let order = Array((0..<C).reversed())
        var vectors = [Double](repeating: 0, count: C * C)
        for i in 0..<C { for (j, e) in order.enumerated() { vectors[i * C + j] = eigen.vectors[i * C + e] } }
        let top = order.map { max(0, eigen.values[$0]).squareRoot() }
        let cos = dgemm(unit, vectors, m: M, k: C, n: C).map(abs)
        let k = min(max(1, nullDims), C)
        let null = (0..<M).map { n in ((C - k)..<C).reduce(0.0) { $0 + cos[n * C + $1] * cos[n * C + $1] } }
        return Weights(norm: norms, logitVar: logitVar, ratio: ratio, ranking: ranking,
                       singularValues: top.map { $0 / max(top[0], .leastNormalMagnitude) }, nullFraction: null, nullDims: k,
                       cosines: cos)
    }

    /// The last block's W_out, `(d_mlp, d_model)`, in double.
    static func lastWOut(_ model: GPT2Model) -> [Double] {
        let cfg = model.config
        let w = model.parameters.blocks[cfg.nLayers - 1].wOut
        return (0..<(cfg.dMLP * cfg.dModel)).map { Double(w[$0]) }
    }
}
