/// One block's activations for a batch, llm.c style: one flat buffer per quantity, each shape
/// on its line (B prompts, T positions, C = d_model, NH heads, M = d_mlp, N = B·T rows).
/// A backward pass reads these same buffers.
public struct LayerActivations: Sendable {
    public var residPre: [Float]    // (N, C)
    public var ln1Mean: [Float]     // (N)
    public var ln1Scale: [Float]    // (N)     hook_scale
    public var ln1Out: [Float]      // (N, C)  hook_normalized
    public var qkv: [Float]         // (N, 3C) q | k | v, heads contiguous inside each
    public var scores: [Float]      // (B, NH, T, T) scaled, masked with -inf
    public var pattern: [Float]     // (B, NH, T, T)
    public var z: [Float]           // (N, C)  = (N, NH, dh)
    public var result: [Float]?     // (N, NH, C) per-head output, only when asked for
    public var attnOut: [Float]     // (N, C)
    public var residMid: [Float]    // (N, C)
    public var ln2Mean: [Float]     // (N)
    public var ln2Scale: [Float]    // (N)
    public var ln2Out: [Float]      // (N, C)
    public var mlpPre: [Float]      // (N, M)
    public var mlpPost: [Float]     // (N, M)
    public var mlpOut: [Float]      // (N, C)
    public var residPost: [Float]   // (N, C)
}

/// Everything one forward pass computed.
public struct Activations: Sendable {
    public let B: Int, T: Int
    public var embed: [Float]       // (N, C)
    public var posEmbed: [Float]    // (N, C)
    public var layers: [LayerActivations]
    public var lnFMean: [Float]     // (N)
    public var lnFScale: [Float]    // (N)
    public var lnFOut: [Float]      // (N, C)
}
