import Foundation
import GPT2
import TensorCore

/// Medians of raw `sgemm` on two shapes the forward pass uses: the reference rates, GFLOP/s.
struct SgemmRates {
    var block = Double.nan      // (T, C) · (C, M), the shape of mlp c_fc
    var unembed = Double.nan    // (T, C) · (V, C)ᵀ, the unembedding
}

/// The core measurements, timed in rounds so they see the same machine: sgemm on the block
/// and unembedding shapes, then the forward pass with no cache, with every hook cached, and
/// with logits at the last position only.
func benchCore(model: GPT2Model, tokens: [Int], options o: BenchOptions) throws -> ([Measurement], SgemmRates) {
    let c = model.config, T = tokens.count
    let C = c.dModel, M = c.dMLP, V = c.dVocab

    var rng = (o.seed ^ 0x5367_656D_6D) | 1
    func filled(_ n: Int) -> [Float] {
        (0..<n).map { _ in
            rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: rng >> 11) % 1000) * 1e-5
        }
    }
    let a = filled(T * C), wIn = filled(C * M), wU = filled(V * C)
    var outBlock = [Float](repeating: 0, count: T * M)
    var outUnembed = [Float](repeating: 0, count: T * V)

    let everyHook = Set(HookName.all(nLayers: c.nLayers))
    let forwards: [(name: String, cache: Set<HookName>, logits: LogitPositions, rows: Int)] = [
        ("1×\(T), no cache, logits at all positions", [], .all, T),
        ("1×\(T), every hook cached, logits at all", everyHook, .all, T),
        ("1×\(T), no cache, logits at last position", [], .last, 1),
    ]
    var bodies: [() throws -> Void] = [
        { sgemm(M: T, N: M, K: C, A: a, lda: C, B: wIn, ldb: M, C: &outBlock, ldc: M) },
        { sgemm(transB: true, M: T, N: V, K: C, A: a, lda: C, B: wU, ldb: C, C: &outUnembed, ldc: V) },
    ]
    for f in forwards {
        bodies.append {
            let r = try model.forward([tokens], cache: f.cache, logits: f.logits)
            blackHole(r.logits.data.last ?? 0)
        }
    }
    let timings: [Timing]
    do {
        timings = try measureInRounds(warmup: o.warmup, runs: o.runs, bodies)
    } catch {
        throw BenchError.forwardFailed((error as? LocalizedError)?.errorDescription ?? "\(error)")
    }

    func row(_ section: String, _ name: String, _ t: Timing, gflop: Double, reference: Double? = nil) -> Measurement {
        Measurement(section: section, name: name, seconds: t.seconds, cores: t.cores, faults: t.faultsPerCall,
                    gflop: gflop, reference: reference)
    }
    var rows = [
        row("sgemm", "\(T)×\(C) · \(C)×\(M) (mlp c_fc)", timings[0], gflop: 2 * Double(T * C * M) / 1e9),
        row("sgemm", "\(T)×\(C) · (\(V)×\(C))ᵀ (unembed)", timings[1], gflop: 2 * Double(T * C * V) / 1e9),
    ]
    let rates = SgemmRates(block: rows[0].gflops!.median, unembed: rows[1].gflops!.median)
    for (i, f) in forwards.enumerated() {
        let flops = ForwardFLOPs(config: c, B: 1, T: T, logitRows: f.rows)
        rows.append(row("forward", f.name, timings[2 + i], gflop: flops.total / 1e9,
                        reference: flops.referenceRate(blockGFLOPS: rates.block, unembedGFLOPS: rates.unembed)))
    }
    return (rows, rates)
}

/// Keeps a value alive so the optimiser cannot drop the work that made it.
@inline(never)
func blackHole(_ x: Float) {
    if x == .greatestFiniteMagnitude { print("") }
}
