import Distributed
import Foundation
import GPT2
import Support

/// How the ranks of a data-parallel training sum their gradients (`--allreduce`).
public enum AllreduceMode: String, Sendable, CaseIterable {
    /// One `MPI_Allreduce` of the flat gradient buffer after the step's passes.
    case whole
    /// One `MPI_Iallreduce` per block, started as soon as the backward of the rank's last
    /// micro-batch of the step has finished that block (driven by `MPI_Testall` between blocks),
    /// the rest (embeddings, ln_f) after the backward, all waited for before the optimizer.
    case buckets
}

/// Data-parallel training (`mpirun -n K lnlens train|remove-ln`): every rank holds the whole model
/// and optimizer, runs a contiguous share of each step's micro-batches, and after the step's
/// passes the ranks sum their gradients (one `MPI_Allreduce` of the flat gradient buffer) and
/// their micro-batches' losses and σ measurements. Every rank then clips, steps AdamW and folds
/// σ in identically, so the ranks' parameters stay the same without being sent.
///
/// What equals one process exactly: the loss, the auxiliary loss and σ (each micro-batch's own
/// numbers are gathered into their slot of a zeroed buffer, and summed in micro-batch order as one
/// process sums them); with `--sigma-update micro-batch` the σ updates are replayed in global
/// micro-batch order from those numbers. What does not: the gradient sum, whose float additions
/// are grouped by rank (one process adds micro-batch after micro-batch), a rounding-level change.
///
/// While an `ln_1` has one path fake and the other real, a micro-batch's forward divides by a σ
/// that the step's earlier micro-batches moved: a rank then first runs the forwards of the
/// micro-batches before its share (no backward), to start its share from the σ one process has there.
extension Trainer {
    /// Refuses more ranks than a step has micro-batches.
    static func check(settings s: TrainingSettings, ranks: Int) throws {
        let parts = (s.sequencesPerStep + s.microBatch - 1) / s.microBatch
        guard parts >= ranks else {
            throw TrainingError.badOption(option: "--micro-batch", reason: "a step has \(parts) micro-batch\(parts == 1 ? "" : "es") of --micro-batch \(s.microBatch) sequences for \(ranks) ranks: lower --micro-batch to at most \(max(1, s.sequencesPerStep / ranks)), or run at most \(parts) ranks")
        }
    }

    /// The sequences (by index in the step) of each micro-batch of a step of `sequences`.
    func microBatches(sequences: Int) -> [Range<Int>] {
        stride(from: 0, to: sequences, by: settings.microBatch).map { $0 ..< min(sequences, $0 + settings.microBatch) }
    }

    /// The micro-batches (of `count`) this rank runs: a contiguous share, sizes differing by at most one.
    func share(of count: Int) -> Range<Int> {
        let k = communicator.size, r = communicator.rank
        return (r * count / k) ..< ((r + 1) * count / k)
    }

    /// With `.microBatch` σ updates, when the plan divides by a σ that moves within the step, runs
    /// the forwards of `parts` (the micro-batches before this rank's share) and folds their σ in.
    func replayEarlierMicroBatches(_ sequences: [[Int]], parts: ArraySlice<Range<Int>>, step: Int) throws {
        guard let ln = layerNorms, ln.sigmaUpdate == .microBatch, ln.planMovesWithinStep(at: step) else { return }
        for j in parts.indices {
            let part = Array(sequences[parts[j]])
            var forward = ForwardOptions(logits: .none, retainForBackward: true, layerNorms: plan(at: step))
            (forward.arenas, forward.dropout) = (arenas, dropout(step: step, microBatch: j))
            var one = MeasuredSigmas(nLayers: model.config.nLayers)
            one.add(try model.run(part, forward))
            layerNorms?.update(microBatch: one.mean(), sequences: part.count, step: step)
        }
    }

    /// Sums the ranks' gradients and gathers every micro-batch's numbers into `stats`; with
    /// `.microBatch` σ updates, replays them from `before` (the state as the step began) in order.
    func reduceStep(_ stats: inout StepStatistics, parts: [Range<Int>], before: FakeLayerNorms?, step: Int) throws {
        if let buckets = gradientBuckets() {
            // The blocks' reductions were started by the last micro-batch's backward.
            for r in buckets.rest { try communicator.startAllreduceSum(gradients.arena.base + r.lowerBound, count: r.count) }
            try communicator.finishAllreduces()
        } else {
            try communicator.allreduceSum(gradients.arena.base, count: gradients.table.count)
        }
        try communicator.allreduceSum(&stats.values)
        guard layerNorms?.sigmaUpdate == .microBatch else { return }
        layerNorms = before
        for j in parts.indices {
            layerNorms?.update(microBatch: stats.sigmas(j).mean(), sequences: parts[j].count, step: step)
        }
    }

    /// With `--allreduce buckets` on several ranks: each block's stretch of the flat gradient
    /// buffer (its tensors are adjacent in the table) and the stretches outside every block (the
    /// embeddings, ln_f, the unembedding's bias), which the embeddings' backward completes last.
    /// Nil otherwise, or if a block's tensors were not adjacent.
    func gradientBuckets() -> (blocks: [Range<Int>], rest: [Range<Int>])? {
        guard allreduce == .buckets, communicator.size > 1 else { return nil }
        let entries = gradients.table.entries
        var blocks: [Range<Int>] = []
        for l in 0..<model.config.nLayers {
            let mine = entries.indices.filter { entries[$0].name.hasPrefix("h.\(l).") }
            guard let first = mine.first, let last = mine.last, mine.count == last - first + 1 else { return nil }
            let end = last + 1 < entries.count ? entries[last + 1].offset : gradients.table.count
            blocks.append(entries[first].offset ..< end)
        }
        guard let low = blocks.first?.lowerBound, let high = blocks.last?.upperBound,
              zip(blocks, blocks.dropFirst()).allSatisfy({ $0.upperBound == $1.lowerBound }) else { return nil }
        return (blocks, [0 ..< low, high ..< gradients.table.count].filter { !$0.isEmpty })
    }

    /// A digest of what every rank must hold alike before a step: the parameters, AdamW's step
    /// and moments, σ and the step (`TrainJob` checks it across ranks at start and on resume).
    public var stateDigest: UInt64 {
        let bytes = model.parameters.table.count * MemoryLayout<Float>.stride
        var h: UInt64 = 0
        for buffer in [model.parameters, optimizer.m, optimizer.v] {
            h = XXH64.hash(UnsafeRawBufferPointer(start: buffer.arena.base, count: bytes), seed: h)
        }
        let header = [Int64(step), Int64(optimizer.steps)]
        h = header.withUnsafeBytes { XXH64.hash($0, seed: h) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys  // a keyed container's order differs from process to process
        if let ln = layerNorms, let json = try? encoder.encode(ln) { h = json.withUnsafeBytes { XXH64.hash($0, seed: h) } }
        return h
    }
}

/// Each micro-batch's numbers of one step in a flat buffer (zero where another rank ran it), so
/// one sum over the ranks gathers them: per micro-batch the σ sums of every `ln_1`, `ln_2` and
/// `ln_f`, the tokens, the loss and the auxiliary loss (each already weighted by its share).
struct StepStatistics {
    let nLayers: Int
    var values: [Double]
    var stride: Int { 2 * nLayers + 4 }

    init(microBatches: Int, nLayers: Int) {
        self.nLayers = nLayers
        values = Array(repeating: 0, count: microBatches * (2 * nLayers + 4))
    }

    var count: Int { values.count / stride }

    mutating func record(_ j: Int, sigmas: MeasuredSigmas, loss: Double, aux: Double) {
        let o = j * stride
        for b in 0..<nLayers { (values[o + b], values[o + nLayers + b]) = (sigmas.ln1[b], sigmas.ln2[b]) }
        (values[o + 2 * nLayers], values[o + 2 * nLayers + 1]) = (sigmas.lnFinal, Double(sigmas.tokens))
        (values[o + 2 * nLayers + 2], values[o + 2 * nLayers + 3]) = (loss, aux)
    }

    /// Micro-batch `j`'s σ sums.
    func sigmas(_ j: Int) -> MeasuredSigmas {
        let o = j * stride
        var m = MeasuredSigmas(nLayers: nLayers)
        m.ln1 = Array(values[o ..< o + nLayers])
        m.ln2 = Array(values[o + nLayers ..< o + 2 * nLayers])
        (m.lnFinal, m.tokens) = (values[o + 2 * nLayers], Int(values[o + 2 * nLayers + 1]))
        return m
    }

    /// The step's loss and auxiliary loss and mean σ, summed in micro-batch order.
    func total() -> (loss: Double, aux: Double, sigmas: MeasuredSigmas) {
        var loss = 0.0, aux = 0.0
        var measured = MeasuredSigmas(nLayers: nLayers)
        for j in 0..<count {
            measured.add(sigmas(j))
            (loss, aux) = (loss + values[j * stride + 2 * nLayers + 2], aux + values[j * stride + 2 * nLayers + 3])
        }
        return (loss, aux, measured.mean())
    }
}
