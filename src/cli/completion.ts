import type { Command } from 'commander'
import { InvalidArgument } from '../lib/errors.js'

/** Each command path (`dms`, `dms key`, …) with the words that may follow it: subcommands, then options. */
function wordTable (program: Command): Array<{ path: string, subs: string[], words: string[] }> {
  const out: Array<{ path: string, subs: string[], words: string[] }> = []
  const walk = (cmd: Command, path: string): void => {
    const subs = cmd.commands.map(c => c.name()).filter(n => n !== 'help')
    const opts = cmd.options.flatMap(o => [o.long, o.short]).filter((x): x is string => x !== undefined)
    out.push({ path, subs, words: [...subs, ...opts, '--help'] })
    for (const c of cmd.commands) walk(c, `${path} ${c.name()}`)
  }
  walk(program, program.name())
  return out
}

/**
 * `dms completion bash|zsh|fish`: a script generated from the same command tree as `--help`, so
 * it cannot drift from the commands. zsh uses the bash script through bashcompinit.
 */
export function completionScript (program: Command, shell: string): string {
  const table = wordTable(program)
  const bash = [
    '# dms completion for bash: eval "$(dms completion bash)" (or save it under /etc/bash_completion.d/)',
    'declare -gA _dms_subs=(' + table.map(t => `["${t.path}"]="${t.subs.join(' ')}"`).join(' ') + ')',
    'declare -gA _dms_words=(' + table.map(t => `["${t.path}"]="${t.words.join(' ')}"`).join(' ') + ')',
    '_dms() {',
    '  local cur="${COMP_WORDS[COMP_CWORD]}" path="dms" w',
    '  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
    '    [[ " ${_dms_subs[$path]} " == *" $w "* ]] && path="$path $w"',
    '  done',
    '  COMPREPLY=( $(compgen -W "${_dms_words[$path]}" -- "$cur") )',
    '}',
    'complete -o default -F _dms dms',
    ''
  ].join('\n')
  if (shell === 'bash') return bash
  if (shell === 'zsh') return ['# dms completion for zsh: eval "$(dms completion zsh)"', 'autoload -U +X bashcompinit && bashcompinit', bash].join('\n')
  if (shell === 'fish') {
    const lines = ['# dms completion for fish: dms completion fish > ~/.config/fish/completions/dms.fish', 'complete -c dms -f']
    for (const t of table) {
      const parts = t.path.split(' ').slice(1)
      // fish: the words after `dms` so far are exactly this path
      const cond = parts.length === 0 ? '__fish_use_subcommand' : `__fish_seen_subcommand_from ${parts[parts.length - 1]}`
      if (t.subs.length > 0) lines.push(`complete -c dms -n '${cond}' -a '${t.subs.join(' ')}'`)
      for (const w of t.words.filter(x => x.startsWith('--'))) lines.push(`complete -c dms -n '${cond}' -l ${w.slice(2)}`)
    }
    return lines.join('\n') + '\n'
  }
  throw new InvalidArgument(`dms completion takes bash, zsh or fish; got '${shell}'`)
}
