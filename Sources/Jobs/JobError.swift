import Cluster
import Foundation
import Formats
import Quant
import Tensors

/// A job's input or outcome that the user has to fix: one line naming the file, option or
/// rank, and what to do about it.
package struct JobError: UserFacingError {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// "4m05s", "1h02m": for ETAs and run times in progress lines and tables.
package func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
}

/// Joins the MPI world (a world of one without mpirun), splits it into `teachers` serving ranks
/// and students, and runs `body` on this rank. Returns the process's exit status: 0; 2 when
/// the world has no rank for every role (said once, by rank 0, on every rank alike so none
/// hangs); 1 for any other failure, which with several ranks aborts them all (they would
/// otherwise wait forever for the failed one). Errors go to `printLine` as one line naming the
/// rank and its role.
package func runRanks(teachers: Int, printLine: @escaping (String) -> Void, _ body: (Roles) throws -> Void) -> Int32 {
    let world: Communicator
    do { world = try MPI.initialize() } catch { printLine("error: \(error)"); return 1 }
    defer { MPI.finalize() }
    let roles: Roles
    do { roles = try Roles(world: world, teachers: teachers) } catch {
        if world.rank == 0 { printLine("error: \(error)") }
        return 2
    }
    do {
        try body(roles)
        return 0
    } catch {
        let message = "error: rank \(world.rank) (\(roles.describe(rank: world.rank))): \(error)"
        if world.size > 1 { MPI.abort(message, code: 1) }
        printLine(message)
        return 1
    }
}
