// Stage 4 of GPT-2 tokenization: ids back to text. Reference: `decode` in openai/gpt-2
// `src/encoder.py` — concatenate each token's bytes, then read them as UTF-8 with
// errors="replace" (each invalid sequence becomes U+FFFD, as Python and HF tokenizers do).

extension GPT2Tokenizer {
    /// Text of `ids`. Ids outside the vocabulary are skipped (as GPT2TokenizerFast does).
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids where id >= 0 && id < tokenBytes.count {
            if let token = tokenBytes[id] { bytes.append(contentsOf: token) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Text of one token for display (e.g. 262 → " the"); a token that is only part of a UTF-8
    /// character shows as U+FFFD, an unknown id as "".
    public func tokenString(_ id: Int) -> String {
        decode([id])
    }
}
