import Foundation
import Support
import Tokenizer

/// Where `train`, `remove-ln` and `eval` read their tokens (`TokenCorpus` says how each is cut).
public enum CorpusSource: Equatable, Sendable {
    /// A UTF-8 text, documents separated by lines `<|endoftext|>` (`--corpus`, `--text`).
    case text(URL)
    /// A token file: an `.npy` (its header gives the type; `dtype`, when given, must agree) or
    /// a headerless `.bin` of `dtype` (default u16, nanoGPT's) (`--tokens`, `--token-dtype`).
    case tokens(URL, dtype: TokenDType?)
    /// A JSON Lines dataset, one document per row in `field` (`--dataset`, `--field`).
    case dataset(URL, field: String)

    public var url: URL {
        switch self {
        case .text(let u), .tokens(let u, _), .dataset(let u, _): u
        }
    }

    /// The tokens, for blocks of `window` tokens (a dataset is cut for that length; a stream
    /// serves any). Token ids are checked against the model's `vocabSize`.
    public func load(tokenizer: GPT2Tokenizer, vocabSize: Int, window: Int) throws -> TokenCorpus {
        let eot = tokenizer.endOfTextID
        switch self {
        case .text(let url):
            return try TokenCorpus.load(url, tokenizer: tokenizer, eot: eot)
        case .tokens(let url, let dtype):
            return try TokenCorpus.load(tokens: TokenFile.open(url, dtype: dtype), vocabSize: vocabSize, eot: eot)
        case .dataset(let url, let field):
            return try TokenCorpus.load(dataset: JSONLDataset.load(url, field: field), tokenizer: tokenizer, eot: eot,
                                        vocabSize: vocabSize, window: window)
        }
    }
}
