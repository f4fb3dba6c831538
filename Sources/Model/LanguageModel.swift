import Foundation
import Formats
import Tensors

/// A checkpoint made ready to run: its decoder, tokenizer and chat template.
package final class LanguageModel {
    package let checkpoint: Checkpoint
    package let decoder: Decoder
    package let tokenizer: BPETokenizer
    package let chatTemplate: ChatTemplate

    /// Opens a GGUF file or a Hugging Face directory (config.json, safetensors, tokenizer.json).
    package convenience init(path: String) throws {
        try self.init(checkpoint: try Checkpoint.open(path))
    }

    /// Runs an opened checkpoint (e.g. a quantized one, whose weights source dequantizes).
    package init(checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        // The tokenizer is checked before the (slower) weight load so a missing one fails fast.
        (tokenizer, chatTemplate) = try checkpoint.loadTokenizer()
        let weights = try DecoderWeights(config: checkpoint.config, source: checkpoint.weights)
        try weights.installRunTimeTransforms(try OnlineTransforms(checkpoint), activation: checkpoint.activationQuant)
        decoder = Decoder(weights: weights)
    }

    package var config: ModelConfig { checkpoint.config }

    /// Token ids that end a generation: the tokenizer's EOS, the config's, and ChatML's end of turn.
    package var stopTokens: Set<Int> { Self.stopTokens(tokenizer: tokenizer, config: config) }

    package static func stopTokens(tokenizer: BPETokenizer, config: ModelConfig) -> Set<Int> {
        var stops = Set<Int>()
        if let e = tokenizer.eosTokenId { stops.insert(e) }
        if let e = config.eosTokenId { stops.insert(e) }
        if let e = tokenizer.id(of: "<|im_end|>") { stops.insert(e) }
        return stops
    }

    /// The prompt as token ids, wrapped in the chat template when `chat` is set.
    package func encodePrompt(_ text: String, chat: Bool) -> [Int] {
        tokenizer.encode(chatTemplate.prompt(text, chat: chat))
    }
}
