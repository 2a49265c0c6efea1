import Foundation

extension GPT2Model {
    /// Reads a verified checkpoint's weights and applies `processing`. As in transformers, a
    /// stored `lm_head.weight` is used only when `tie_word_embeddings` is false; otherwise the
    /// unembedding is `wte`.
    public convenience init(checkpoint: Checkpoint, processing: ProcessingOptions = .all) throws {
        let raw = try ModelWeights(config: checkpoint.config, tensor: checkpoint.tensor,
                                   hasLMHead: checkpoint.hasUntiedUnembedding && !checkpoint.config.tieWordEmbeddings)
        self.init(config: checkpoint.config, weights: raw, processing: processing)
    }
}
