import Foundation
import XCTest
import TestSupport
import Formats

/// smollm2-gguf-reference.json: chat prompts carry the messages and the exact string
/// transformers' apply_chat_template(add_generation_prompt=True) made from them.
private struct ReferencePrompts: Decodable {
    struct Prompt: Decodable { let name: String; let chat: Bool; let text: String; let messages: [ChatMessage]? }
    let prompts: [Prompt]
}

final class ChatTemplateTests: XCTestCase {
    func testSmolLM2RendersAsTransformers() throws {
        let reference = try TestPaths.loadJSON(ReferencePrompts.self, fixture: "smollm2-gguf-reference.json")
        let chats = reference.prompts.filter(\.chat)
        XCTAssertFalse(chats.isEmpty)
        for prompt in chats {
            let messages = try XCTUnwrap(prompt.messages, prompt.name)
            XCTAssertEqual(ChatTemplate.smolLM2.render(messages, addGenerationPrompt: true), prompt.text, prompt.name)
        }
    }

    func testDetectsSmolLM2FromTheGGUFTemplate() throws {
        let jinja = try GGUFFile(url: TestPaths.require(TestPaths.smolLM2GGUF)).metadata["tokenizer.chat_template"]?.string
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: jinja), .smolLM2)
    }

    func testDetectFallsBackToPlainChatML() {
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: nil), .chatML)
        let qwen3Like = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}"
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: qwen3Like), .chatML)
        let qwen25 = "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: qwen25), .qwen2_5)
    }

    func testSystemMessageIsInsertedOnlyWhenMissing() {
        let user = ChatMessage(role: "user", content: "Hi")
        let system = ChatMessage(role: "system", content: "Be brief.")
        XCTAssertEqual(ChatTemplate.smolLM2.render([system, user], addGenerationPrompt: false),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        XCTAssertEqual(ChatTemplate.qwen.render([user], addGenerationPrompt: true),
                       "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        // SmolLM2's template adds its system message inside the message loop: none for no messages.
        XCTAssertEqual(ChatTemplate.smolLM2.render([], addGenerationPrompt: true), "<|im_start|>assistant\n")
    }

    func testMultiTurnConversation() {
        let turns = [ChatMessage(role: "user", content: "2+2?"), ChatMessage(role: "assistant", content: "4"),
                     ChatMessage(role: "user", content: "Times 3?")]
        XCTAssertEqual(ChatTemplate.smolLM2.render(turns, addGenerationPrompt: true),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
                       + "<|im_start|>user\nTimes 3?<|im_end|>\n<|im_start|>assistant\n")
    }
}
