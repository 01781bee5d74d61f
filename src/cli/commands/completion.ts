// `tidemark completion bash|zsh`: a completion script built from the program's own commands and options.
import type { Command } from 'commander';
import { F } from '../../migration/failures';
import { CliError } from '../errors';

function words(program: Command): { commands: string[]; options: Record<string, string[]> } {
  const options: Record<string, string[]> = {};
  const global = program.options.map((o) => o.long!).filter(Boolean);
  for (const cmd of program.commands) {
    options[cmd.name()] = [...cmd.options.map((o) => o.long!).filter(Boolean), '--help'];
    for (const sub of cmd.commands) options[`${cmd.name()} ${sub.name()}`] = sub.options.map((o) => o.long!);
  }
  options[''] = [...global, '--help'];
  return { commands: program.commands.map((c) => c.name()), options };
}

export function completionScript(program: Command, shell: 'bash' | 'zsh'): string {
  const { commands, options } = words(program);
  const cases = Object.entries(options)
    .filter(([k]) => k && !k.includes(' '))
    .map(([k, opts]) => `    ${k}) opts="${opts.join(' ')}" ;;`)
    .join('\n');
  const bash = `# tidemark completion for bash: source <(tidemark completion bash)
_tidemark() {
  local cur cmd opts
  cur="\${COMP_WORDS[COMP_CWORD]}"
  cmd="\${COMP_WORDS[1]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${commands.join(' ')} ${options[''].join(' ')}" -- "$cur") )
    return
  fi
  case "$cmd" in
${cases}
    plan) opts="check" ;;
    completion) opts="bash zsh" ;;
    *) opts="" ;;
  esac
  if [[ "$cur" == -* || -n "$opts" && "$cmd" =~ ^(plan|completion)$ ]]; then
    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
  else
    COMPREPLY=( $(compgen -f -- "$cur") )
  fi
}
complete -F _tidemark tidemark
`;
  if (shell === 'bash') return bash;
  return `#compdef tidemark
# tidemark completion for zsh: source <(tidemark completion zsh)
autoload -U +X bashcompinit && bashcompinit
${bash}`;
}

export function registerCompletionCommand(program: Command): void {
  program
    .command('completion <shell>')
    .description('print a shell completion script (bash or zsh): source <(tidemark completion bash)')
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh')
        throw new CliError(`no completion for "${shell}": use bash or zsh`, F.Usage);
      process.stdout.write(completionScript(program, shell));
    });
}
