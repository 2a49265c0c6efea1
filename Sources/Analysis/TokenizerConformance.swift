import Tokenizer

extension GPT2Tokenizer: TextEncoder {}
