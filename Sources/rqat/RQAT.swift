import ArgumentParser

@main
struct RQAT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rqat",
        abstract: "Low-bit quantization-aware training of reasoning LLMs on CPU clusters.",
        subcommands: [])
}
