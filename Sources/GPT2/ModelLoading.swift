import Foundation

extension GPT2Model {
    /// Reads a verified checkpoint's weights and applies `processing`.
    public convenience init(checkpoint: Checkpoint, processing: ProcessingOptions = .all) throws {
        let raw = try ModelWeights(config: checkpoint.config, tensor: checkpoint.tensor,
                                   hasLMHead: checkpoint.hasUntiedUnembedding)
        self.init(config: checkpoint.config, weights: raw, processing: processing)
    }
}
