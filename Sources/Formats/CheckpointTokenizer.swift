import Foundation

extension Checkpoint {
    /// The tokenizer and chat template that come with the checkpoint: from the GGUF metadata,
    /// or from `tokenizer.json` (+ `tokenizer_config.json` for the template and the BOS/EOS/pad
    /// token ids) in a directory.
    package func loadTokenizer() throws -> (BPETokenizer, ChatTemplate) {
        if let gguf {
            let tokenizer = try BPETokenizer(ggufMetadata: gguf.metadata, path: path)
            let template = ChatTemplate.detect(chatTemplateJinja: gguf.metadata["tokenizer.chat_template"]?.string)
            return (tokenizer, template)
        }
        let dir = URL(fileURLWithPath: path)
        let tokenizerURL = dir.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
            throw FormatError(tokenizerURL.path,
                              "missing tokenizer: the checkpoint needs tokenizer.json beside config.json (copy it from the base model)")
        }
        let tokenizer = try BPETokenizer(tokenizerJSON: tokenizerURL)
        var jinja: String? = nil
        let configURL = dir.appendingPathComponent("tokenizer_config.json")
        if let data = try? Data(contentsOf: configURL),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            jinja = object["chat_template"] as? String
            // A token is named by its string, or (older files) by an AddedToken object with a
            // "content" string; a name missing from the vocabulary is ignored.
            func id(_ key: String) -> Int? {
                let value = object[key]
                let name = value as? String ?? (value as? [String: Any])?["content"] as? String
                return name.flatMap(tokenizer.id(of:))
            }
            if let bos = id("bos_token") { tokenizer.bosTokenId = bos }
            if let eos = id("eos_token") { tokenizer.eosTokenId = eos }
            if let pad = id("pad_token") { tokenizer.padTokenId = pad }
        }
        return (tokenizer, ChatTemplate.detect(chatTemplateJinja: jinja))
    }
}
