import GPT2

/// Floating-point operations of one forward pass, counted analytically (one multiply-add = 2):
///
///     blocks    = 2 · N · nLayers · (C·3C + C·C + C·M + M·C)      the four weight matmuls
///     attention = 2 · 2 · B · NH · T · T · dh · nLayers            q·kᵀ and pattern·v, full T×T
///     unembed   = 2 · R · C · V                                     R = positions given logits
///
/// with N = B·T. LayerNorm, softmax, GELU, biases and copies are not counted (they are O(N·C)).
struct ForwardFLOPs {
    let blocks: Double
    let attention: Double
    let unembed: Double
    var total: Double { blocks + attention + unembed }

    init(config c: GPT2Config, B: Int, T: Int, logitRows: Int) {
        let N = Double(B * T), C = Double(c.dModel), M = Double(c.dMLP), L = Double(c.nLayers)
        blocks = 2 * N * L * (C * 3 * C + C * C + C * M + M * C)
        attention = 2 * 2 * Double(B * c.nHeads * T * T * c.dHead) * L
        unembed = 2 * Double(logitRows) * C * Double(c.dVocab)
    }

    /// The rate this work would run at if every matmul ran at the measured sgemm rates: block and
    /// attention FLOPs at the block-shaped rate, unembedding FLOPs at the unembedding rate.
    func referenceRate(blockGFLOPS: Double, unembedGFLOPS: Double) -> Double {
        let seconds = (blocks + attention) / (blockGFLOPS * 1e9) + unembed / (unembedGFLOPS * 1e9)
        return total / seconds / 1e9
    }
}
