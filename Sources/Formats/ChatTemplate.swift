/// One turn of a conversation.
package struct ChatMessage: Equatable, Sendable, Codable {
    package var role: String
    package var content: String

    package init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The ChatML prompt format SmolLM2 and Qwen share:
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n` to
/// ask for the reply. Models differ only in the system message they add when a conversation
/// has none, so that is the one setting; rendering gives the same string as transformers'
/// `apply_chat_template` with each model's Jinja template.
package struct ChatTemplate: Equatable, Sendable {
    /// Inserted as the first message when the first message is not a system message.
    package var defaultSystemPrompt: String?

    package init(defaultSystemPrompt: String? = nil) {
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// Plain ChatML, no default system message (Qwen3).
    package static let chatML = ChatTemplate()
    package static let qwen = chatML
    package static let smolLM2 = ChatTemplate(defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    package static let qwen2_5 = ChatTemplate(defaultSystemPrompt: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    package static let qwen2 = ChatTemplate(defaultSystemPrompt: "You are a helpful assistant.")

    package func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var turns = messages
        if let system = defaultSystemPrompt, let first = messages.first, first.role != "system" {
            turns.insert(ChatMessage(role: "system", content: system), at: 0)
        }
        var text = turns.map { "<|im_start|>\($0.role)\n\($0.content)<|im_end|>\n" }.joined()
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }

    /// The preset matching a model's Jinja chat template (GGUF `tokenizer.chat_template`, or
    /// `chat_template` in tokenizer_config.json), recognised by the default system message
    /// written into it; plain ChatML when there is none or no template at all.
    package static func detect(chatTemplateJinja jinja: String?) -> ChatTemplate {
        guard let jinja else { return .chatML }
        // Longest prompt first: Qwen2's is the tail of Qwen2.5's.
        let presets = [smolLM2, qwen2_5, qwen2]
        return presets.first { jinja.contains($0.defaultSystemPrompt! + "<|im_end|>") } ?? .chatML
    }

    /// `text` as a model is asked it: one user message and the assistant generation prompt when
    /// `chat`, else the text itself.
    package func prompt(_ text: String, chat: Bool = true) -> String {
        chat ? render([ChatMessage(role: "user", content: text)], addGenerationPrompt: true) : text
    }
}
