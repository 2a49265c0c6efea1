import Foundation

/// How a LayerNorm divides: GPT-2's `sqrt(var + eps)` per row, or a fixed constant (an LN-free
/// checkpoint's `sqrt(eps)`, or FakeLN's frozen σ while LayerNorm is removed by fine-tuning).
public enum LayerNormScale: Sendable, Equatable {
    case standard(eps: Float)
    case fixed(Float)
}

/// First half of a LayerNorm, as TransformerLens splits it: per row of `x (N, C)` its mean and
/// its scale (`hook_scale`), `scale (N)` = `sqrt(var + eps)` or the fixed constant. When given,
/// `rawScale (N)` receives `sqrt(var + rawEps)` whatever the mode: the scale as computed from x,
/// which the backward differentiates and training tracks (σ of a FakeLN). Generic so that exact
/// recomputations (DLA's direct effect, in Double) use this same LayerNorm.
@inlinable
@_specialize(where F == Float)
@_specialize(where F == Double)
public func layerNormStats<F: BinaryFloatingPoint>(
    mean: UnsafeMutablePointer<F>, scale: UnsafeMutablePointer<F>, rawScale: UnsafeMutablePointer<F>?,
    x: UnsafePointer<F>, N: Int, C: Int, mode: LayerNormScale, rawEps: Float
) {
    var needVariance = rawScale != nil
    if case .standard = mode { needVariance = true }
    for n in 0..<N {
        let row = x + n * C
        var m: F = 0
        for c in 0..<C { m += row[c] }
        m /= F(C)
        mean[n] = m
        var variance: F = 0
        if needVariance {
            for c in 0..<C { let d = row[c] - m; variance += d * d }
            variance /= F(C)
        }
        switch mode {
        case .standard(let eps): scale[n] = (variance + F(eps)).squareRoot()
        case .fixed(let s): scale[n] = F(s)
        }
        rawScale?[n] = (variance + F(rawEps)).squareRoot()
    }
}

/// Second half: `out (N, C) = (x − mean) / scale · w + b` (`hook_normalized`); `w`, `b` nil once
/// folded into the next layer (TransformerLens's LNPre).
@inlinable
@_specialize(where F == Float)
@_specialize(where F == Double)
public func layerNormApply<F: BinaryFloatingPoint>(
    out: UnsafeMutablePointer<F>, x: UnsafePointer<F>, mean: UnsafePointer<F>, scale: UnsafePointer<F>,
    w: UnsafePointer<F>?, b: UnsafePointer<F>?, N: Int, C: Int
) {
    for n in 0..<N {
        let row = x + n * C, o = out + n * C
        let m = mean[n], inv = 1 / scale[n]
        if let w, let b {
            for c in 0..<C { o[c] = (row[c] - m) * inv * w[c] + b[c] }
        } else {
            for c in 0..<C { o[c] = (row[c] - m) * inv }
        }
    }
}

/// Backward of `layerNormApply`: from `dout (N, C)` (the gradient at `hook_normalized`) gives
/// `dxhat (N, C)` (gradient of `(x − mean)/scale`), the gradient at `hook_scale` `dscale (N)`
/// (`−Σ_c dxhat·(x − mean)/scale²`), and accumulates `dw`, `db` (C) when given.
/// `dxhat` may be `dout` itself.
public func layerNormApplyBackward(dxhat: FloatPointer, dscale: FloatPointer, dw: FloatPointer?, db: FloatPointer?,
                                   dout: ConstFloatPointer, x: ConstFloatPointer, mean: ConstFloatPointer,
                                   scale: ConstFloatPointer, w: ConstFloatPointer?, N: Int, C: Int) {
    for n in 0..<N {
        let row = x + n * C, g = dout + n * C, dh = dxhat + n * C
        let m = mean[n], inv = 1 / scale[n]
        var ds: Float = 0
        for c in 0..<C {
            let xc = row[c] - m
            let xhat = xc * inv
            let gc = g[c]
            if let dw { dw[c] += gc * xhat }
            if let db { db[c] += gc }
            let d = w.map { gc * $0[c] } ?? gc
            dh[c] = d
            ds -= d * xhat * inv
        }
        dscale[n] = ds
    }
}

/// Backward of the normalisation and centring, accumulating into `dx (N, C)`:
/// `dxc = dxhat / scale + dscale · (x − mean) / (C · rawScale)` — the second term only when the
/// scale depends on x (`scaleDependsOnInput`: a standard LayerNorm whose scale is not frozen) —
/// then `dx += dxc − mean(dxc)`.
public func layerNormStatsBackward(dx: FloatPointer, dxhat: ConstFloatPointer, dscale: ConstFloatPointer?,
                                   x: ConstFloatPointer, mean: ConstFloatPointer, scale: ConstFloatPointer,
                                   rawScale: ConstFloatPointer?, scaleDependsOnInput: Bool, N: Int, C: Int) {
    for n in 0..<N {
        let row = x + n * C, dh = dxhat + n * C, out = dx + n * C
        let m = mean[n], inv = 1 / scale[n]
        var k: Float = 0
        if scaleDependsOnInput, let dscale, let rawScale { k = dscale[n] / (Float(C) * rawScale[n]) }
        var sum: Float = 0
        for c in 0..<C { sum += dh[c] * inv + k * (row[c] - m) }
        let meanGrad = sum / Float(C)
        for c in 0..<C { out[c] += dh[c] * inv + k * (row[c] - m) - meanGrad }
    }
}

/// Extra gradient of per-row raw scales `sqrt(var + eps)` (an auxiliary loss on σ), accumulated
/// into `dx (N, C)`: `dx += dσ · (x − mean) / (C · σ)` (centring's backward is already in it: the
/// term has zero mean).
public func rawScaleBackward(dx: FloatPointer, dRawScale: ConstFloatPointer, x: ConstFloatPointer,
                             mean: ConstFloatPointer, rawScale: ConstFloatPointer, N: Int, C: Int) {
    for n in 0..<N {
        let row = x + n * C, out = dx + n * C
        let k = dRawScale[n] / (Float(C) * rawScale[n])
        for c in 0..<C { out[c] += k * (row[c] - mean[n]) }
    }
}
