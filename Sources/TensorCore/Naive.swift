import Foundation

/// Reference implementations in Double, written for clarity, kept as the test oracle of the
/// BLAS-backed kernels: each kernel's forward is checked against these, and each backward against
/// central finite differences of these.
public enum Naive {
    /// `(N, OC) = x (N, IC) · w (IC, OC) + bias (OC)`.
    public static func matmul(_ x: [Double], _ w: [Double], _ bias: [Double]?, N: Int, IC: Int, OC: Int) -> [Double] {
        var out = [Double](repeating: 0, count: N * OC)
        for n in 0..<N {
            for o in 0..<OC {
                var s = bias?[o] ?? 0
                for i in 0..<IC { s += x[n * IC + i] * w[i * OC + o] }
                out[n * OC + o] = s
            }
        }
        return out
    }

    /// `(R, V) = x (R, C) · wUᵀ + bU`, `wU (V, C)`.
    public static func unembed(_ x: [Double], _ wU: [Double], _ bU: [Double], R: Int, C: Int, V: Int) -> [Double] {
        var out = [Double](repeating: 0, count: R * V)
        for r in 0..<R {
            for v in 0..<V {
                var s = bU[v]
                for c in 0..<C { s += x[r * C + c] * wU[v * C + c] }
                out[r * V + v] = s
            }
        }
        return out
    }

    /// LayerNorm of each row of `x (N, C)`: `(x − mean)/scale · w + b`, scale `sqrt(var + eps)` or fixed.
    public static func layerNorm(_ x: [Double], w: [Double]?, b: [Double]?, N: Int, C: Int, mode: LayerNormScale) -> [Double] {
        var out = [Double](repeating: 0, count: N * C)
        for n in 0..<N {
            let row = Array(x[(n * C)..<(n * C + C)])
            let mean = row.reduce(0, +) / Double(C)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(C)
            let scale: Double = switch mode {
            case .standard(let eps): (variance + Double(eps)).squareRoot()
            case .fixed(let s): Double(s)
            }
            for c in 0..<C {
                let xhat = (row[c] - mean) / scale
                out[n * C + c] = xhat * (w?[c] ?? 1) + (b?[c] ?? 0)
            }
        }
        return out
    }

    /// `gelu_new` in its tanh form.
    public static func gelu(_ x: [Double]) -> [Double] {
        let k = (2.0 / Double.pi).squareRoot()
        return x.map { 0.5 * $0 * (1 + tanh(k * ($0 + 0.044715 * $0 * $0 * $0))) }
    }

    /// Causal attention over `qkv (B·T, 3C)`: the pattern `(B, NH, T, T)` and `z (B·T, C)`.
    public static func attention(_ qkv: [Double], B: Int, T: Int, C: Int, NH: Int, alpha: Double)
        -> (pattern: [Double], z: [Double])
    {
        let dh = C / NH
        var pattern = [Double](repeating: 0, count: B * NH * T * T)
        var z = [Double](repeating: 0, count: B * T * C)
        for b in 0..<B {
            for h in 0..<NH {
                func q(_ t: Int, _ e: Int) -> Double { qkv[(b * T + t) * 3 * C + h * dh + e] }
                func k(_ t: Int, _ e: Int) -> Double { qkv[(b * T + t) * 3 * C + C + h * dh + e] }
                func v(_ t: Int, _ e: Int) -> Double { qkv[(b * T + t) * 3 * C + 2 * C + h * dh + e] }
                for i in 0..<T {
                    var scores = [Double](repeating: 0, count: i + 1)
                    for j in 0...i { scores[j] = alpha * (0..<dh).reduce(0) { $0 + q(i, $1) * k(j, $1) } }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }
                    let s = e.reduce(0, +)
                    for j in 0...i { pattern[((b * NH + h) * T + i) * T + j] = e[j] / s }
                    for d in 0..<dh {
                        z[(b * T + i) * C + h * dh + d] = (0...i).reduce(0) { $0 + e[$1] / s * v($1, d) }
                    }
                }
            }
        }
        return (pattern, z)
    }

    /// Mean next-token cross-entropy of `logits (B·T, V)` against `tokens` shifted by one.
    public static func crossEntropy(_ logits: [Double], tokens: [[Int]], V: Int) -> Double {
        let B = tokens.count, T = tokens[0].count
        var total = 0.0
        for b in 0..<B {
            for t in 0..<(T - 1) {
                let row = Array(logits[((b * T + t) * V)..<((b * T + t) * V + V)])
                let m = row.max()!
                total += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[tokens[b][t + 1]]
            }
        }
        return total / Double(B * (T - 1))
    }

    /// Central finite-difference gradient of `f` at `x`, one coordinate at a time.
    public static func gradient(_ f: ([Double]) -> Double, at x: [Double], step: Double = 1e-6) -> [Double] {
        var probe = x
        return x.indices.map { i in
            probe[i] = x[i] + step
            let up = f(probe)
            probe[i] = x[i] - step
            let down = f(probe)
            probe[i] = x[i]
            return (up - down) / (2 * step)
        }
    }
}
