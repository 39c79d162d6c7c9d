@echo off
rem pobatch launcher for Windows.
rem   Double-click:            choose the orders file, sequential or parallel, and go.
rem   run.bat demo             the demo batch end to end
rem   run.bat test             the test suite
rem   run.bat run orders.xlsx --base-url https://yourcompany.coupahost.com
setlocal EnableExtensions
cd /d "%~dp0"

set "PY=python"
where py >nul 2>nul && set "PY=py -3"
if exist ".venv\Scripts\pobatch.exe" goto :ready
echo Setting up pobatch in .venv (first run only)...
%PY% -m venv .venv
if errorlevel 1 goto :setup_failed
".venv\Scripts\python.exe" -m pip install -q --disable-pip-version-check -e ".[test]"
if errorlevel 1 goto :setup_failed

:ready
if "%~1"=="" goto :interactive
if /i "%~1"=="test" goto :test
".venv\Scripts\pobatch.exe" %*
exit /b %errorlevel%

:test
shift
".venv\Scripts\python.exe" -m pytest %1 %2 %3 %4 %5 %6 %7 %8 %9
exit /b %errorlevel%

:interactive
set "ORDERS="
for /f "usebackq delims=" %%F in (`powershell -NoProfile -STA -Command "Add-Type -AssemblyName System.Windows.Forms; $d = New-Object System.Windows.Forms.OpenFileDialog; $d.Title = 'Choose the file of PO numbers'; $d.Filter = 'PO lists (*.csv;*.xlsx;*.xlsm;*.txt)|*.csv;*.xlsx;*.xlsm;*.txt|All files (*.*)|*.*'; if ($d.ShowDialog() -eq 'OK') { $d.FileName }"`) do set "ORDERS=%%F"
if not defined ORDERS (
  echo No file chosen.
  goto :end
)

set "CFGDIR=%LOCALAPPDATA%\pobatch"
set "CFG=%CFGDIR%\base_url.txt"
set "BASEURL="
if exist "%CFG%" set /p BASEURL=<"%CFG%"
if defined BASEURL goto :have_url
set /p "BASEURL=Portal address (e.g. https://yourcompany.coupahost.com): "
if not defined BASEURL goto :end
if not exist "%CFGDIR%" mkdir "%CFGDIR%"
> "%CFG%" echo %BASEURL%

:have_url
choice /c SP /n /m "Sequential (S) or parallel (P)? "
if errorlevel 2 (set "MODE=--parallel") else (set "MODE=--sequential")
".venv\Scripts\pobatch.exe" run "%ORDERS%" --base-url "%BASEURL%" %MODE% --browser edge
set "RC=%errorlevel%"
echo.
if not "%RC%"=="0" (echo pobatch finished with problems: see the results workbook next to the downloads.) else (echo Done.)
goto :end

:setup_failed
echo Setting up pobatch failed. Python 3.10 or newer must be installed (https://www.python.org or the Microsoft Store).

:end
echo.
echo Press any key to close this window.
pause >nul
